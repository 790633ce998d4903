"""Where SpineSeg finds its shipped resources (label table, bundled model).

Search order: $SPINESEG_RESOURCES, the repository layout (``<repo>/Resources``), and the Slicer extension
install layout (``<module dir>/Resources/SpineSeg``), which the module's CMakeLists installs.
"""

from __future__ import annotations

import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def resources_dir() -> Path:
    candidates = []
    if os.environ.get("SPINESEG_RESOURCES"):
        candidates.append(Path(os.environ["SPINESEG_RESOURCES"]))
    candidates += [_HERE.parent.parent / "Resources", _HERE.parent / "Resources" / "SpineSeg"]
    for candidate in candidates:
        if (candidate / "labels.json").is_file():
            return candidate
    raise FileNotFoundError(
        "SpineSeg resources (labels.json) not found; looked in: " + ", ".join(str(c) for c in candidates)
    )


def default_model_path() -> Path:
    return resources_dir() / "models" / "spineseg-default"
