"""The checkpoint format: a folder (or a .zip of it) with ``model.safetensors`` and ``model_card.json``.

Checkpoints are data, never code: weights are read with safetensors (no unpickling), pickle-based files are
refused outright, and the model card is validated before anything is built. Every refusal is a
:class:`~SpineSegLib.errors.CheckpointError` that says what is wrong. The card is documented in docs/checkpoints.md.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CheckpointError
from .io import atomic_output_dir
from .labels import LabelTable, load_label_table
from .lesion_scores import calibrations_from_card
from .level_sizes import LevelSizes
from .postprocess import IDENTITY_STAGES, NUMBERINGS
from .surface_refinement import refinements_from_card

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model_card.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")
REQUIRED_CARD_KEYS = ("format_version", "name", "architecture", "labels", "preprocessing")


@dataclass
class LoadedModel:
    network: torch.nn.Module
    card: dict
    path: Path

    @property
    def name(self) -> str:
        return self.card["name"]


def label_card(table: LabelTable) -> dict:
    """What a model card records of the label table it was trained with."""
    return {"fingerprint": table.fingerprint(), "values": table.values, "names": table.names,
            "lesion_classes": table.lesion_class_names}


def save_checkpoint(network: torch.nn.Module, card: dict, out_dir: str | Path, dtype=torch.float32) -> Path:
    """Write weights (safetensors) and the model card (JSON) into ``out_dir`` atomically."""
    from safetensors.torch import save_file

    card = dict(card)
    card.setdefault("format_version", FORMAT_VERSION)
    card.setdefault("labels", label_card(load_label_table()))
    missing = [key for key in REQUIRED_CARD_KEYS if key not in card]
    if missing:
        raise ValueError(f"model card lacks {', '.join(missing)}")
    state = {name: t.detach().to("cpu", dtype if t.is_floating_point() else t.dtype).contiguous()
             for name, t in network.state_dict().items()}
    with atomic_output_dir(out_dir) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format_version": str(card["format_version"])})
        digest = hashlib.sha256((tmp / WEIGHTS_FILE).read_bytes()).hexdigest()
        card["weights"] = {"file": WEIGHTS_FILE, "sha256": digest, "dtype": str(dtype).replace("torch.", "")}
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return Path(out_dir)


def _checkpoint_folder(path: Path, scratch: Path) -> Path:
    """The folder holding the card and weights; a .zip is extracted (safely) into ``scratch``."""
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_file() and path.name.lower().endswith(PICKLE_SUFFIXES):
        raise CheckpointError(
            f"{path.name} looks like a pickle-based PyTorch file; SpineSeg refuses to unpickle checkpoints "
            "(they can run code). Use a SpineSeg checkpoint folder with model.safetensors and model_card.json."
        )
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path.name} is neither a checkpoint folder nor a zip archive of one")
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if member.startswith("/") or ".." in Path(member).parts:
                    raise CheckpointError(f"{path.name}: unsafe path {member!r} in the archive")
            archive.extractall(scratch)
        cards = list(scratch.rglob(CARD_FILE))
        if len(cards) != 1:
            raise CheckpointError(f"{path.name}: expected one {CARD_FILE} in the archive, found {len(cards)}")
        return cards[0].parent
    return path


def read_model_card(path: str | Path) -> dict:
    """Read and validate a checkpoint's model card (without loading weights)."""
    path = Path(path)
    with tempfile.TemporaryDirectory() as scratch:
        folder = _checkpoint_folder(path, Path(scratch))
        return _validated_card(folder, path)


def _validated_card(folder: Path, shown: Path) -> dict:
    card_path = folder / CARD_FILE
    if not card_path.is_file():
        raise CheckpointError(f"{shown}: no {CARD_FILE} (a SpineSeg checkpoint holds {CARD_FILE} and {WEIGHTS_FILE})")
    try:
        card = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{shown}: {CARD_FILE} is not valid JSON ({error})") from error
    if not isinstance(card, dict):
        raise CheckpointError(f"{shown}: {CARD_FILE} must hold a JSON object")
    missing = [key for key in REQUIRED_CARD_KEYS if key not in card]
    if missing:
        raise CheckpointError(f"{shown}: model card lacks {', '.join(missing)}")
    version = card["format_version"]
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{shown}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{shown}: checkpoint format version {version} is newer than this SpineSeg supports "
            f"({FORMAT_VERSION}); update SpineSeg to use it"
        )
    table = load_label_table()
    if card["labels"].get("fingerprint") != table.fingerprint():
        raise CheckpointError(
            f"{shown}: the model was trained with a different label table "
            f"({len(card['labels'].get('values', []))} labels, fingerprint {card['labels'].get('fingerprint')}) "
            f"than this SpineSeg uses ({len(table)} labels, fingerprint {table.fingerprint()})"
        )
    from .networks import available_architectures

    arch = card["architecture"]
    if not isinstance(arch, dict) or arch.get("id") not in available_architectures():
        raise CheckpointError(
            f"{shown}: unknown architecture {arch.get('id') if isinstance(arch, dict) else arch!r}; "
            f"this SpineSeg knows {', '.join(available_architectures())}"
        )
    identity = (card.get("postprocessing") or {}).get("identity_stage", "fine")
    if identity not in IDENTITY_STAGES:
        raise CheckpointError(f"{shown}: postprocessing.identity_stage {identity!r} is not one of "
                              f"{', '.join(IDENTITY_STAGES)}")
    numbering = (card.get("postprocessing") or {}).get("numbering", "levels")
    if numbering not in NUMBERINGS:
        raise CheckpointError(f"{shown}: postprocessing.numbering {numbering!r} is not one of {', '.join(NUMBERINGS)}")
    if numbering == "regions" and identity != "fine":
        raise CheckpointError(f"{shown}: postprocessing.numbering regions counts the vertebrae of the last pass; "
                              f"identity_stage {identity!r} does not apply to it")
    sizes = (card.get("postprocessing") or {}).get("level_sizes")
    if sizes is not None:
        if numbering != "regions":
            raise CheckpointError(f"{shown}: postprocessing.level_sizes weighs in when counting; it needs "
                                  "numbering regions")
        try:
            LevelSizes.from_card(sizes, table)
        except (ValueError, TypeError, AttributeError) as error:
            raise CheckpointError(f"{shown}: postprocessing.level_sizes: {error}") from None
    calibration = (card.get("postprocessing") or {}).get("lesion_calibration")
    if calibration is not None:
        try:
            calibrations_from_card(calibration, table)
        except (ValueError, TypeError, AttributeError) as error:
            raise CheckpointError(f"{shown}: postprocessing.lesion_calibration: {error}") from None
    refinement = (card.get("postprocessing") or {}).get("surface_refinement")
    if refinement is not None:
        try:
            refinements_from_card(refinement)
        except (ValueError, TypeError, AttributeError) as error:
            raise CheckpointError(f"{shown}: postprocessing.surface_refinement: {error}") from None
    return card


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Validate the card, build the network, and load the weights (no unpickling)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .networks import build_network

    path = Path(path)
    with tempfile.TemporaryDirectory() as scratch:
        folder = _checkpoint_folder(path, Path(scratch))
        card = _validated_card(folder, path)
        weights = folder / WEIGHTS_FILE
        if not weights.is_file():
            raise CheckpointError(f"{path}: no {WEIGHTS_FILE}")
        expected = card.get("weights", {}).get("sha256")
        if expected and hashlib.sha256(weights.read_bytes()).hexdigest() != expected:
            raise CheckpointError(f"{path}: {WEIGHTS_FILE} is corrupt (its checksum does not match the model card)")
        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path}: {WEIGHTS_FILE} is corrupt or not a safetensors file ({error})") from error
    table = load_label_table()
    arch = card["architecture"]
    try:
        network = build_network(arch["id"], in_channels=card.get("in_channels", 1), num_classes=table.num_classes,
                                num_lesion_classes=len(table.lesion_classes), **arch.get("args", {}))
    except TypeError as error:
        raise CheckpointError(f"{path}: invalid arguments for architecture {arch['id']!r}: {error}") from error
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshapen = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                 for k in set(own) & set(state) if state[k].shape != own[k].shape]
    if missing or unexpected or misshapen:
        details = "; ".join(filter(None, [
            f"missing {len(missing)} (e.g. {missing[0]})" if missing else "",
            f"unexpected {len(unexpected)} (e.g. {unexpected[0]})" if unexpected else "",
            f"wrong shape {len(misshapen)} (e.g. {misshapen[0]})" if misshapen else "",
        ]))
        raise CheckpointError(f"{path}: the weights do not fit architecture {arch['id']!r}: {details}")
    network.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    network.to(device).eval()
    return LoadedModel(network, card, path)
