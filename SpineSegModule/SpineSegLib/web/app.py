"""One SpineSeg web session: trame-slicer (Slicer's MRML, views and segment editor in the browser) with the
SpineSeg panel. Each session is its own process (started by :mod:`SpineSegLib.web.launcher`), so a crash in
one user's session cannot stop the others; within a session every action is guarded.

    python -m SpineSegLib.web.app --host 127.0.0.1 --port 9000 [--spineseg-config CONFIG.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

CONFIG_ENV = "SPINESEG_WEB_CONFIG"


class SpineSegWebApp:
    """The trame server of one session, its Slicer application and controllers."""

    def __init__(self, server=None, config=None):
        from trame.app import get_server
        from trame_slicer import module as trame_slicer_module
        from trame_slicer.app.logic import LayoutButtonLogic, MprInteractionButtonLogic, SegmentEditorLogic
        from trame_slicer.core import SlicerApp
        from trame_slicer.rca_view import register_rca_factories

        from .controller import SessionController, WebConfig
        from .ui import SpineSegUI
        from .views import QUAD_LAYOUT

        self.config = config or WebConfig()
        self.server = server or get_server(client_type="vue3")
        self.server.enable_module(trame_slicer_module)
        self.server.state.trame__title = "SpineSeg"
        self.slicer_app = SlicerApp()
        register_rca_factories(self.slicer_app.view_manager, self.server)
        self.editor_logic = SegmentEditorLogic(self.server, self.slicer_app)
        self.layout_logic = LayoutButtonLogic(self.server, self.slicer_app)
        self.mpr_logic = MprInteractionButtonLogic(self.server, self.slicer_app)
        self.ui = SpineSegUI(self.server, self.layout_logic.layout_manager, "ss_upload_chunk", "ss_upload_end")
        self.controller = SessionController(self.server, self.slicer_app, self.editor_logic, self.ui.data,
                                            self.config)
        self.editor_logic.set_ui(self.ui.editor_ui)
        self.layout_logic.set_ui(self.ui.layout_button)
        self.mpr_logic.set_ui(self.ui.mpr_interaction_button)
        self.layout_logic.data.current_layout_id = QUAD_LAYOUT
        if self.config.phantom_on_start:
            self.server.controller.on_server_ready.add(self._load_phantom)

    def _load_phantom(self, **_):
        from trame_server.utils.asynchronous import create_task

        create_task(self.controller.generate_phantom())

    def start(self, host: str, port: int, timeout: int | None = None):
        self.server.start(host=host, port=port, open_browser=False, timeout=timeout, show_connection_info=False)


def load_config(path: str | None):
    from .controller import WebConfig

    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        return WebConfig()
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    known = set(asdict(WebConfig()))
    return WebConfig(**{k: v for k, v in document.items() if k in known})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m SpineSegLib.web.app", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--timeout", type=int, default=0, help="exit after this many seconds without a browser")
    parser.add_argument("--spineseg-config", default=None, help="JSON session settings (models, datasets...)")
    args, _unknown = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("spineseg").setLevel(logging.INFO)
    app = SpineSegWebApp(config=load_config(args.spineseg_config))
    sys.argv = [sys.argv[0]]  # trame reads sys.argv too: give it nothing of ours
    app.start(args.host, args.port, args.timeout)
    app.controller.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
