"""SpineSeg in the browser, on trame-slicer: ``spineseg web`` / ``spineseg demo`` (see docs/web.md).

``launcher`` serves the page and runs one ``app`` process per browser session; nothing here is imported by the
core or the Slicer module.
"""
