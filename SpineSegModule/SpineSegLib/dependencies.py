"""Python packages SpineSeg needs inside Slicer, and installing them only after the user agreed.

Nothing here runs at import time. The Slicer module calls :func:`ensure_dependencies` when the user clicks
Segment, passing the application's functions (``slicer.util.confirmOkCancelDisplay``, ``slicer.util.pip_install``
and the PyTorch extension's installer); tests pass stand-ins. A declined install raises :class:`DependencyError`
with a message saying what is missing and how to get it.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

from .errors import SpineSegError

# import name -> pip requirement name (the requirement line in requirements.txt wins when present)
REQUIRED = {
    "torch": "torch",
    "monai": "monai",
    "nibabel": "nibabel",
    "nrrd": "pynrrd",
    "pydicom": "pydicom",
    "safetensors": "safetensors",
    "scipy": "scipy",
    "tqdm": "tqdm",
    "yaml": "pyyaml",
    "psutil": "psutil",
}
_HERE = Path(__file__).resolve().parent


class DependencyError(SpineSegError):
    """Required Python packages are missing and were not installed."""


def requirements_file() -> Path | None:
    """``requirements.txt``: installed with the module (Resources/SpineSeg) or in the source tree."""
    candidates = [_HERE.parent / "Resources" / "SpineSeg" / "requirements.txt",
                  _HERE.parent.parent / "SpineSegExtension" / "requirements.txt"]
    try:
        from .resources import resources_dir

        candidates.insert(0, resources_dir() / "requirements.txt")
    except FileNotFoundError:
        pass
    return next((c for c in candidates if c.is_file()), None)


def read_requirements(path: str | Path | None = None) -> list[str]:
    """Requirement lines (comments and blanks dropped); the built-in list when there is no file."""
    path = Path(path) if path else requirements_file()
    if path is None:
        return list(REQUIRED.values())
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[\s]", requirement, maxsplit=1)[0].strip().lower()


def missing_modules(modules=None, find_spec: Callable = importlib.util.find_spec) -> list[str]:
    """Import names from ``modules`` (default: all required) that cannot be imported."""
    missing = []
    for name in modules or REQUIRED:
        try:
            if find_spec(name) is None:
                missing.append(name)
        except (ImportError, ValueError):
            missing.append(name)
    return missing


def missing_requirements(requirements: list[str] | None = None, find_spec: Callable = importlib.util.find_spec
                         ) -> list[str]:
    """Requirement lines whose package is missing."""
    requirements = requirements if requirements is not None else read_requirements()
    by_pip = {pip.lower(): module for module, pip in REQUIRED.items()}
    absent = set(missing_modules(find_spec=find_spec))
    missing = []
    for requirement in requirements:
        module = by_pip.get(_requirement_name(requirement), _requirement_name(requirement))
        if module in absent or (module not in REQUIRED and missing_modules([module], find_spec)):
            missing.append(requirement)
    if "torch" in absent and not any(_requirement_name(r) == "torch" for r in missing):
        missing.insert(0, "torch")
    return missing


def ensure_dependencies(confirm: Callable[[str], bool], pip_install: Callable[[str], object],
                        install_torch: Callable[[], object] | None = None,
                        requirements: list[str] | None = None,
                        find_spec: Callable = importlib.util.find_spec) -> list[str]:
    """Install missing packages after asking; returns what was installed ([] when nothing was missing).

    ``confirm(message) -> bool`` asks the user; ``pip_install(requirements_string)`` installs with pip;
    ``install_torch() -> torch module or None`` is the PyTorch extension's installer (None when the extension is
    absent: torch then comes from pip). Raises :class:`DependencyError` when the user declines or something
    is still missing afterwards.
    """
    missing = missing_requirements(requirements, find_spec)
    if not missing:
        return []
    names = ", ".join(_requirement_name(m) for m in missing)
    question = (
        f"SpineSeg needs these Python packages, which are not installed in Slicer yet:\n\n{names}\n\n"
        "Install them now? This downloads several hundred MB (PyTorch is the largest) and can take a few minutes."
    )
    if not confirm(question):
        raise DependencyError(
            f"SpineSeg cannot run without {names}. Installation was declined, so nothing was segmented. "
            "Click Segment again and accept the installation, or install them yourself from the Python console "
            "(slicer.util.pip_install)."
        )
    torch_missing = [m for m in missing if _requirement_name(m) == "torch"]
    others = [m for m in missing if _requirement_name(m) != "torch"]
    if torch_missing:
        if install_torch is not None:
            if install_torch() is None:
                raise DependencyError("PyTorch was not installed (the PyTorch installer was cancelled or failed); "
                                      "SpineSeg needs it to run.")
        else:
            pip_install(" ".join(torch_missing))
    if others:
        pip_install(" ".join(others))
    importlib.invalidate_caches()
    still = missing_requirements(requirements, find_spec)
    if still:
        raise DependencyError(f"These packages are still missing after installation: "
                              f"{', '.join(_requirement_name(m) for m in still)}. See the Python console for errors.")
    return missing
