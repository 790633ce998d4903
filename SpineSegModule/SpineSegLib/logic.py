"""The Slicer module's logic without Qt: check inputs, run a segmentation (out of process or in process), and
put its result into the scene only when it succeeded.

``SpineSeg.py`` (the Slicer module) is a thin shell over this; the same code runs against slicer-core in CI, so
every refusal the user can meet (no volume, a labelmap or 2D input, a bad checkpoint, a crashed process, a
cancelled run) is tested without the application. A failed or cancelled run never changes the scene.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import process as _process
from . import scene as _scene
from .errors import Cancelled, CheckpointError, InputError, SpineSegError

DEVICES = {"Auto": "auto", "GPU": "cuda", "CPU": "cpu", "auto": "auto", "cuda": "cuda", "cpu": "cpu", "gpu": "cuda"}


@dataclass
class SegmentOptions:
    """What the user chose in the module panel."""

    model: str | None = None  # checkpoint folder or .zip; None = the bundled default
    device: str = "auto"  # auto | cuda | cpu (or the panel's Auto | GPU | CPU)
    fast: bool = False
    keep_previous: bool = False
    show_3d: bool = True
    segmentation_node: object = None  # an existing segmentation to fill, or None for a new one
    heatmap_threshold: float = _scene.DEFAULT_HEATMAP_THRESHOLD
    heatmap_opacity: float = _scene.DEFAULT_HEATMAP_OPACITY
    in_process: bool = False  # run segment_volume in this process (tests, scripting)
    python: str | None = None  # the Python for the CLI (default: PythonSlicer in Slicer, sys.executable here)


# --- models ----------------------------------------------------------------------------------------------------
def resolve_model(model: str | Path | None) -> Path:
    """The checkpoint path for ``model`` (None: the bundled default); raises CheckpointError if it is missing."""
    if model in (None, ""):
        from .resources import default_model_path

        try:
            path = default_model_path()
        except FileNotFoundError as error:
            raise CheckpointError(f"the bundled SpineSeg model is not installed: {error}") from error
        if not path.exists():
            raise CheckpointError(f"the bundled SpineSeg model is missing: {path} does not exist")
        return path
    path = Path(model).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def check_model(model: str | Path | None, full: bool = True) -> dict:
    """Validate a checkpoint's model card (no weights loaded) and return it; raises CheckpointError.

    ``full``: the checkpoint module's complete validation (imports torch for the architecture registry); without
    it, or while torch is not installed, only what the card alone tells is checked (for showing it in a panel).
    """
    path = resolve_model(model)
    if full:
        try:
            from .checkpoint import read_model_card
        except ImportError:
            full = False
    if not full:
        return _light_card_check(path)
    try:
        return read_model_card(path)
    except CheckpointError:
        raise
    except Exception as error:  # a card that breaks the validator is still a bad checkpoint
        raise CheckpointError(f"{path}: cannot read the checkpoint ({type(error).__name__}: {error})") from error


def _light_card_check(path: Path) -> dict:
    if path.is_file() and path.suffix.lower() in (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin"):
        raise CheckpointError(f"{path.name} looks like a pickle-based PyTorch file; SpineSeg refuses to unpickle "
                              "checkpoints. Use a SpineSeg checkpoint folder or .zip.")
    card = read_card_file(path)
    if not isinstance(card, dict):
        raise CheckpointError(f"{path}: model_card.json must hold a JSON object")
    missing = [key for key in ("format_version", "name", "architecture", "labels", "preprocessing") if key not in card]
    if missing or not isinstance(card.get("architecture"), dict):
        raise CheckpointError(f"{path}: not a SpineSeg checkpoint (its model card lacks "
                              f"{', '.join(missing) or 'an architecture'})")
    from .labels import load_label_table

    if (card.get("labels") or {}).get("fingerprint") != load_label_table().fingerprint():
        raise CheckpointError(f"{path}: the model was trained with a different label table than this SpineSeg uses")
    return card


def read_card_file(path: str | Path) -> dict:
    """The raw ``model_card.json`` of a checkpoint folder or .zip (for display before dependencies exist)."""
    path = Path(path)
    try:
        if path.is_dir():
            return json.loads((path / "model_card.json").read_text(encoding="utf-8"))
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("model_card.json")]
            if len(names) != 1:
                raise CheckpointError(f"{path.name}: expected one model_card.json in the archive")
            return json.loads(archive.read(names[0]).decode("utf-8"))
    except CheckpointError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path}: cannot read its model card ({error})") from error


def describe_model(card: dict) -> str:
    """One short paragraph for the panel: name, architecture, metrics, measured CPU and GPU time."""
    arch = card.get("architecture") or {}
    args = arch.get("args") or {}
    arch_text = str(arch.get("id", "?")) + (f" ({', '.join(f'{k}={v}' for k, v in args.items())})" if args else "")
    lines = [f"{card.get('name', 'unnamed model')}", f"Architecture: {arch_text}"]
    metrics = _numbers(card.get("metrics") or {})
    shown = [(k, v) for k, v in metrics if not k.endswith(("seconds", "cases"))][:6]
    if shown:
        lines.append("Metrics: " + ", ".join(f"{_metric_name(k)} {_fmt_metric(v)}" for k, v in shown))
    timing = card.get("timing") or {}
    times = []
    for prefix, label in (("cpu_seconds", "CPU"), ("gpu_seconds", "GPU")):
        for key, value in timing.items():
            if key.startswith(prefix) and isinstance(value, (int, float)) and not isinstance(value, bool):
                mode = key[len(prefix):].strip("_")
                times.append(f"{label}{f' ({mode})' if mode else ''} {value:.0f} s" if value >= 10
                             else f"{label}{f' ({mode})' if mode else ''} {value:.1f} s")
    if times:
        reference = timing.get("reference") or timing.get("input")
        lines.append("Measured time: " + ", ".join(times) + (f" ({reference})" if isinstance(reference, str) else ""))
    return "\n".join(lines)


def _numbers(tree: dict, prefix: str = "") -> list[tuple[str, float]]:
    """Numeric leaves of a nested metrics dict as (dotted name, value)."""
    found = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found += _numbers(value, name + ".")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:  # not NaN
            found.append((name, value))
    return found


METRIC_NAMES = {
    "mean_vertebra_dice": "Dice", "dice": "Dice", "identification_rate": "ID rate", "id_rate": "ID rate",
    "lesion_recall_at_1fp": "lesion recall@1FP", "lesion_recall_at_1fp_strict": "lesion recall@1FP (strict)",
    "lesion_ap": "lesion AP",
}


def _metric_name(dotted: str) -> str:
    *groups, leaf = dotted.split(".")
    name = METRIC_NAMES.get(leaf, leaf)
    return f"{name} ({'/'.join(groups)})" if groups else name


def _fmt_metric(value: float) -> str:
    return f"{value:.3f}" if isinstance(value, float) and abs(value) <= 1.5 else f"{value:g}"


def model_summary(model: str | Path | None, full: bool = False) -> tuple[str, bool]:
    """(text, ok) for the panel's model label; never raises. Light check by default: the panel must not import
    torch into the application just to show a card (the full check runs when Segment is clicked)."""
    try:
        return describe_model(check_model(model, full=full)), True
    except SpineSegError as error:
        return str(error), False


# --- validation ------------------------------------------------------------------------------------------------
def normalize_device(device: str) -> str:
    try:
        return DEVICES[device]
    except KeyError:
        raise InputError(f"unknown device {device!r}: choose Auto, GPU or CPU") from None


def validate(scene, input_node, options: SegmentOptions):
    """All checks before a run; returns (input volume, model card). Raises InputError or CheckpointError."""
    if scene is None:
        raise InputError("no scene")
    if input_node is not None and input_node.GetScene() is not scene:
        raise InputError(f"'{input_node.GetName()}' is not in the current scene")
    volume = _scene.check_input_volume_node(input_node)
    options.device = normalize_device(options.device)
    segmentation = options.segmentation_node
    if segmentation is not None and not segmentation.IsA("vtkMRMLSegmentationNode"):
        raise InputError(f"'{segmentation.GetName()}' is not a segmentation node")
    card = check_model(options.model)
    return volume, card


# --- one run ---------------------------------------------------------------------------------------------------
class SegmentationRun:
    """Segment one input volume of a scene and, only on success, add the result nodes to the scene.

    ``start()`` validates and raises :class:`~SpineSegLib.errors.SpineSegError` on bad input before anything
    runs; afterwards errors are reported through ``state``/``message`` and ``on_finished``. Drive it with
    ``poll()`` from a GUI timer, or ``wait()``. ``nodes`` holds the :class:`~SpineSegLib.scene.ResultNodes`.
    """

    def __init__(self, scene, input_node, options: SegmentOptions | None = None,
                 on_progress: Callable[[float, str], None] | None = None,
                 on_finished: Callable[[SegmentationRun], None] | None = None, segment=None):
        self.scene = scene
        self.input_node = input_node
        self.options = options or SegmentOptions()
        self.on_progress = on_progress
        self.on_finished = on_finished
        self.segment = segment  # in-process only: a stand-in for segment_volume (tests)
        self.state = _process.IDLE
        self.message = ""
        self.nodes: _scene.ResultNodes | None = None
        self.card: dict = {}
        self.runner = None
        self.workdir: Path | None = None
        self._notified = False

    @property
    def fraction(self) -> float:
        return self.runner.fraction if self.runner is not None else 0.0

    @property
    def stage(self) -> str:
        return self.runner.stage if self.runner is not None else ""

    @property
    def finished(self) -> bool:
        return self.state in _process.FINISHED_STATES

    def start(self) -> SegmentationRun:
        volume, self.card = validate(self.scene, self.input_node, self.options)
        options = self.options
        model = str(resolve_model(options.model))
        if options.in_process:
            self.runner = _process.InProcessRunner(volume, model=model, device=options.device, fast=options.fast,
                                                   on_progress=self.on_progress, segment=self.segment)
        else:
            from .io import write_nifti

            del volume  # the float32 copy made for the checks; the file keeps the node's own voxel type
            self.workdir = Path(tempfile.mkdtemp(prefix="spineseg-"))
            try:
                source = _scene.node_to_volume(self.input_node)
                dtype = source.array.dtype if source.array.dtype in (np.int16, np.uint16, np.float32) else np.float32
                input_path = self.workdir / "input.nii"
                write_nifti(source, input_path, dtype=dtype)
            except Exception:
                self._cleanup()
                raise
            self.runner = _process.ProcessRunner.for_segmentation(
                input_path, self.workdir / "result", model=model, device=options.device, fast=options.fast,
                python=options.python, on_progress=self.on_progress)
        self.state = _process.RUNNING
        self.runner.start()
        return self

    def poll(self) -> str:
        if self.state != _process.RUNNING:
            return self.state
        state = self.runner.poll()
        if state == _process.DONE:
            try:
                result = self.runner.result()
                self._check_still_there()
                self.nodes = _scene.add_result_to_scene(
                    self.scene, result, self.input_node, keep_previous=self.options.keep_previous,
                    segmentation_node=self.options.segmentation_node, show_3d=self.options.show_3d,
                    heatmap_threshold=self.options.heatmap_threshold, heatmap_opacity=self.options.heatmap_opacity)
                self._finish(_process.DONE, "")
            except SpineSegError as error:
                self._finish(_process.ERROR, str(error))
            except Exception as error:  # noqa: BLE001 - reading or adding the result failed: tell the user
                self._finish(_process.ERROR, f"Could not add the result to the scene: {type(error).__name__}: {error}")
        elif state in (_process.ERROR, _process.CANCELLED):
            self._finish(state, self.runner.message)
        return self.state

    def _check_still_there(self) -> None:
        if self.input_node.GetScene() is not self.scene:
            raise InputError(f"the input volume '{self.input_node.GetName()}' was removed while it was segmented")
        segmentation = self.options.segmentation_node
        if segmentation is not None and segmentation.GetScene() is not self.scene:
            self.options.segmentation_node = None  # the chosen output was deleted: make a new one

    def cancel(self) -> None:
        if self.state != _process.RUNNING:
            return
        self.runner.cancel()
        self._finish(_process.CANCELLED, "cancelled by the user")

    def wait(self, timeout: float | None = None, interval: float = 0.05, idle=None) -> str:
        return _process.wait_for(self, timeout, interval, idle)

    def _finish(self, state: str, message: str) -> None:
        self.state = state
        self.message = message
        self._cleanup()
        if not self._notified:
            self._notified = True
            if self.on_finished is not None:
                self.on_finished(self)

    def _cleanup(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def raise_for_state(self) -> None:
        """Raise the error of a failed or cancelled run (for scripts)."""
        if self.state == _process.CANCELLED:
            raise Cancelled(self.message or "cancelled by the user")
        if self.state == _process.ERROR:
            raise SpineSegError(self.message)


def run_segmentation(scene, input_node, options: SegmentOptions | None = None, on_progress=None,
                     timeout: float | None = None, idle=None, segment=None) -> _scene.ResultNodes:
    """Blocking run for scripts and tests: returns the result nodes or raises SpineSegError."""
    run = SegmentationRun(scene, input_node, options, on_progress=on_progress, segment=segment).start()
    state = run.wait(timeout=timeout, idle=idle)
    if state == _process.RUNNING:
        run.cancel()
        raise SpineSegError(f"the segmentation did not finish within {timeout:g} s and was cancelled")
    run.raise_for_state()
    return run.nodes
