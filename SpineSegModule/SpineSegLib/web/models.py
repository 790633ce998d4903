"""The models a web session offers: the bundled default model and the checkpoints found in a models folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError
from ..logic import read_card_file

BUNDLED = "bundled"


@dataclass(frozen=True)
class ModelEntry:
    key: str  # what the browser sends back: "bundled" or the checkpoint's folder/zip name
    title: str
    path: Path


def find_models(models_dir: str | Path | None = None) -> list[ModelEntry]:
    """The bundled default (when installed) and every checkpoint folder or .zip directly in ``models_dir``."""
    entries = []
    try:
        from ..resources import default_model_path

        bundled = default_model_path()
        if (bundled / "model_card.json").is_file():
            entries.append(ModelEntry(BUNDLED, f"{_name(bundled)} (bundled)", bundled))
    except FileNotFoundError:
        pass
    if models_dir:
        folder = Path(models_dir).expanduser()
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                is_checkpoint = (path.is_dir() and (path / "model_card.json").is_file()) or \
                    (path.is_file() and path.suffix.lower() == ".zip")
                if is_checkpoint and path.name != BUNDLED:
                    entries.append(ModelEntry(path.name, f"{_name(path)} ({path.name})", path))
    return entries


def _name(path: Path) -> str:
    try:
        return str(read_card_file(path).get("name") or path.name)
    except CheckpointError:
        return path.name


def resolve(entries: list[ModelEntry], key: str | None) -> ModelEntry:
    """The entry for ``key`` (a key, a folder name or a path); the first one when ``key`` is empty."""
    if not entries:
        raise CheckpointError("no model is available: install the bundled model or put a checkpoint in the "
                              "server's models folder")
    if not key:
        return entries[0]
    for entry in entries:
        if key in (entry.key, str(entry.path), entry.path.name):
            return entry
    raise CheckpointError(f"unknown model {key!r}; available: {', '.join(e.key for e in entries)}")
