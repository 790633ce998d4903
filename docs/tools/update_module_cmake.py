"""Rewrite the explicit script list in SpineSegModule/CMakeLists.txt from the .py files on disk.

    python docs/tools/update_module_cmake.py [--check]

Lists SpineSeg.py and every .py file under SpineSegLib (sorted) between the ``# BEGIN/END MODULE_PYTHON_SCRIPTS``
markers. ``--check`` only reports whether the list is up to date (exit 1 if not); Testing/scene checks it too.
"""

import sys
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[2] / "SpineSegModule"
BEGIN, END = "  # BEGIN MODULE_PYTHON_SCRIPTS (docs/tools/update_module_cmake.py)", "  # END MODULE_PYTHON_SCRIPTS"


def scripts() -> list[str]:
    files = sorted(p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "SpineSegLib").rglob("*.py")
                   if "__pycache__" not in p.parts)
    return ["SpineSeg.py"] + files


def main(argv) -> int:
    cmake = MODULE_DIR / "CMakeLists.txt"
    text = cmake.read_text()
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    block = "\n" + "".join(f"  {name}\n" for name in scripts())
    if text[start:stop] == block:
        print("the module CMakeLists lists every script")
        return 0
    if "--check" in argv:
        print("SpineSegModule/CMakeLists.txt is out of date: run python docs/tools/update_module_cmake.py")
        return 1
    cmake.write_text(text[:start] + block + text[stop:])
    print(f"updated {cmake} ({len(scripts())} scripts)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
