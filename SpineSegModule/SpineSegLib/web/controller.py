"""One browser session's actions: load a CT (upload or phantom), segment it out of process with progress and
cancel, show the result, list vertebrae and lesions, download files and save the corrected case.

Every action is :func:`~SpineSegLib.web.guard.guarded`: a failure is a message on this session's page. MRML is
only touched on the event loop's thread; reading files and generating phantoms run in worker threads, and the
segmentation runs in a separate process (:class:`SpineSegLib.logic.SegmentationRun`) polled without blocking.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from trame_server.utils.asynchronous import create_task

from .. import process as _process
from .. import scene as _scene
from ..errors import InputError
from ..logic import SegmentationRun, SegmentOptions, describe_model, read_card_file
from . import downloads, models, views
from .corrections_controller import CorrectionsController
from .guard import guarded, report
from .state import PHANTOM_PRESETS, apply_defaults
from .uploads import read_uploaded_volume, write_uploads

POLL_S = 0.25
REFRESH_DELAY_S = 0.4


@dataclass
class WebConfig:
    models_dir: str | None = None
    datasets_dir: str = "spineseg-datasets"
    default_model: str | None = None
    device: str = "auto"
    phantom_on_start: bool = False
    python: str | None = None  # the Python that runs ``spineseg segment`` (default: this one)


class SessionController:
    def __init__(self, server, slicer_app, editor_logic, layout_state, config: WebConfig):
        self.server = server
        self.state = server.state
        self.app = slicer_app
        self.scene = slicer_app.scene
        self.editor_logic = editor_logic  # trame-slicer's SegmentEditorLogic
        self.editor = slicer_app.segmentation_editor
        self.layout_state = layout_state  # trame-slicer's ViewerLayoutState (drawer, active tool...)
        self.config = config
        self.workdir = Path(tempfile.mkdtemp(prefix="spineseg-web-"))
        self.ct_node = None
        self.result: _scene.ResultNodes | None = None
        self.run: SegmentationRun | None = None
        self._uploads: list[dict] = []
        self._refresh_pending = False
        self.corrections = CorrectionsController(self)
        apply_defaults(self.state)
        self.models = models.find_models(config.models_dir)
        self._publish_models()
        self.state.change("ss_heat_opacity")(self._on_heat_opacity)
        self.state.change("ss_heat_threshold")(self._on_heat_threshold)
        self.state.change("ss_model")(self._on_model)
        self.editor.segmentation_modified.connect(self.schedule_refresh)
        ctrl = server.controller
        server.trigger("ss_upload_chunk")(self.upload_chunk)
        server.trigger("ss_upload_end")(self.upload_end)
        server.trigger("ss_download")(self.download)
        ctrl.ss_phantom = self.generate_phantom
        ctrl.ss_segment = self.segment
        ctrl.ss_cancel = self.cancel
        ctrl.ss_jump_vertebra = self.jump_to_vertebra
        ctrl.ss_jump_lesion = self.jump_to_lesion
        ctrl.ss_save_case = self.save_case
        ctrl.ss_clear_messages = self.clear_messages

    # --- models ---------------------------------------------------------------------------------------------------
    def _publish_models(self) -> None:
        self.state.ss_models = [{"value": m.key, "title": m.title} for m in self.models]
        chosen = ""
        if self.models:
            try:
                chosen = models.resolve(self.models, self.config.default_model).key
            except Exception:  # noqa: BLE001 - an unknown default: fall back to the first model
                chosen = self.models[0].key
        self.state.ss_model = chosen
        self._on_model(chosen)

    def _on_model(self, ss_model=None, **_):
        try:
            entry = models.resolve(self.models, ss_model)
            self.state.ss_model_info = describe_model(read_card_file(entry.path))
        except Exception as error:  # noqa: BLE001 - shown in the panel
            self.state.ss_model_info = str(error)

    # --- loading --------------------------------------------------------------------------------------------------
    async def upload_chunk(self, files=None):
        if files:
            self._uploads.extend(files)
            return
        files, self._uploads = self._uploads, []
        await self.load_upload(files)

    def upload_end(self, status: str = "success", message: str = ""):
        if status != "success":
            report(self.state, InputError(f"the upload failed: {message or 'unknown error'}"), "Upload")

    @guarded("Loading the CT", busy="Reading the CT...")
    async def load_upload(self, files: list[dict]):
        paths = write_uploads(files, self.workdir / "upload")
        volume, name = await asyncio.to_thread(read_uploaded_volume, paths)
        self.set_volume(volume, name)
        self._info(f"Loaded {name}: {self.state.ss_volume_info}")

    @guarded("Generating a phantom", busy="Generating a phantom...")
    async def generate_phantom(self):
        from ..phantom import PhantomConfig, generate_phantom

        settings = PHANTOM_PRESETS.get(self.state.ss_phantom_preset) or next(iter(PHANTOM_PRESETS.values()))
        seed = int(self.state.ss_phantom_seed or 0)
        phantom = await asyncio.to_thread(generate_phantom, PhantomConfig(seed=seed, lesions=2, **settings))
        self.set_volume(phantom.ct, f"phantom_{settings['region']}_{seed}")
        self._info(f"Phantom ready ({', '.join(phantom.vertebrae)}): {self.state.ss_volume_info}")

    def set_volume(self, volume, name: str) -> None:
        """Show a new CT (the previous one, its result and the editor's history are cleared)."""
        self._cancel_run()
        self.corrections.detach()
        self.result = None
        self.scene.Clear()  # also resets the segment editor, as trame-slicer's own loader does
        node = _scene.volume_to_node(self.scene, volume, re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60] or "CT")
        views.show_ct(self.app, node)
        self.ct_node = node
        self.editor_logic.on_volume_changed(node)  # an empty segmentation to paint in, or to fill by Segment
        spacing = "x".join(f"{s:.2g}" for s in volume.spacing)
        with self.state:
            self.state.ss_has_volume = True
            self.state.ss_volume_name = node.GetName()
            self.state.ss_volume_info = f"{'x'.join(str(n) for n in volume.shape)} voxels of {spacing} mm"
            self.state.ss_has_result = False
            self.state.ss_vertebrae = []
            self.state.ss_lesions = []
            self.state.ss_selected = ""
            self.state.ss_run_state = "idle"
            self.state.ss_progress = 0.0
            self.state.ss_saved = ""
            self.layout_state.is_volume_loaded = True

    # --- segmentation ---------------------------------------------------------------------------------------------
    @guarded("Segmentation")
    def segment(self):
        if self.run is not None and self.run.state == _process.RUNNING:
            raise InputError("a segmentation is already running")
        if self.ct_node is None or self.ct_node.GetScene() is not self.scene:
            raise InputError("load a CT or generate a phantom first")
        entry = models.resolve(self.models, self.state.ss_model)
        target = self.editor.active_segmentation_node
        options = SegmentOptions(model=str(entry.path), device=self.config.device, fast=bool(self.state.ss_fast),
                                 segmentation_node=target if target is not None and target.GetScene() else None,
                                 heatmap_threshold=float(self.state.ss_heat_threshold),
                                 heatmap_opacity=float(self.state.ss_heat_opacity), python=self.config.python)
        self.editor.deactivate_effect()
        self.corrections.detach()
        run = SegmentationRun(self.scene, self.ct_node, options)
        run.start()  # bad input or model: raises here, shown by the guard
        self.run = run
        with self.state:
            self.state.ss_running = True
            self.state.ss_run_state = _process.RUNNING
            self.state.ss_progress = 0.0
            self.state.ss_stage = "starting"
            self.state.ss_message = ""
        create_task(self._watch(run, time.monotonic()))

    async def _watch(self, run: SegmentationRun, started: float) -> None:
        try:
            while True:
                state = run.poll()  # on success this adds the result nodes to the scene
                if state in _process.FINISHED_STATES:
                    break
                with self.state:
                    self.state.ss_progress = round(100.0 * run.fraction, 1)
                    self.state.ss_stage = run.stage or "working"
                    self.state.ss_run_seconds = round(time.monotonic() - started, 1)
                await asyncio.sleep(POLL_S)
            seconds = round(time.monotonic() - started, 1)
            with self.state:
                self.state.ss_running = False
                self.state.ss_run_state = state
                self.state.ss_run_seconds = seconds
            if state == _process.DONE:
                self._show_result(run.nodes, seconds)
            elif state == _process.CANCELLED:
                self._info("Segmentation cancelled; nothing was changed.")
            else:
                report(self.state, InputError(run.message or "the segmentation failed"), "Segmentation")
        except Exception as error:  # noqa: BLE001 - shown on the page
            with self.state:
                self.state.ss_running = False
                self.state.ss_run_state = _process.ERROR
            report(self.state, error, "Segmentation")

    @guarded("Cancelling")
    def cancel(self):
        self._cancel_run()

    def _cancel_run(self) -> None:
        if self.run is not None and self.run.state == _process.RUNNING:
            self.run.cancel()

    def _show_result(self, nodes: _scene.ResultNodes, seconds: float) -> None:
        self.result = nodes
        for index in reversed(range(self.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))):
            other = self.scene.GetNthNodeByClass(index, "vtkMRMLSegmentationNode")
            if other is not nodes.segmentation and not other.GetAttribute(_scene.ATTR_ROLE):
                self.scene.RemoveNode(other)  # an editor placeholder the result did not fill
        self.editor_logic.data.segment_display.show_3d = True
        self.editor_logic.on_volume_changed(self.ct_node)  # the editor now edits the result
        self.editor.set_surface_representation_enabled(True)
        views.reset_3d(self.app)
        if nodes.heatmap is not None:
            views.show_heatmap(self.app, nodes.heatmap, float(self.state.ss_heat_opacity))
        self.corrections.attach(nodes, self.ct_node)
        self.refresh()
        vertebrae = self.state.ss_vertebrae
        span = f" ({vertebrae[0]['name']}-{vertebrae[-1]['name']})" if vertebrae else ""
        with self.state:
            self.state.ss_has_result = True
            self.state.ss_progress = 100.0
            self.state.ss_stage = "done"
        self._info(f"Segmented {len(vertebrae)} vertebrae{span} and {len(self.state.ss_lesions)} lesions "
                   f"in {seconds:.1f} s.")

    # --- display --------------------------------------------------------------------------------------------------
    def _heatmap(self):
        return self.result.heatmap if self.result is not None and self.result.heatmap is not None else None

    def _on_heat_opacity(self, ss_heat_opacity=None, **_):
        heat = self._heatmap()
        if heat is not None and heat.GetScene() is self.scene:
            _scene.set_heatmap_opacity(self.scene, float(ss_heat_opacity), heat)

    def _on_heat_threshold(self, ss_heat_threshold=None, **_):
        heat = self._heatmap()
        if heat is not None and heat.GetScene() is self.scene:
            _scene.set_heatmap_threshold(heat, float(ss_heat_threshold))

    # --- lists ----------------------------------------------------------------------------------------------------
    def schedule_refresh(self, *_):
        """Refresh the lists shortly after the segmentation changed (paint strokes come in bursts)."""
        if self._refresh_pending or not self.corrections.active:
            return
        self._refresh_pending = True

        async def later():
            await asyncio.sleep(REFRESH_DELAY_S)
            self._refresh_pending = False
            try:
                self.corrections.update_report()
                self.refresh()
            except Exception as error:  # noqa: BLE001 - shown on the page
                report(self.state, error, "Updating the lists")

        create_task(later())

    def refresh(self) -> None:
        vertebrae, lesions = self.corrections.listing()
        with self.state:
            self.state.ss_vertebrae = vertebrae
            self.state.ss_lesions = lesions
            ids = {v["id"] for v in vertebrae}
            if self.state.ss_selected not in ids:
                self.state.ss_selected = vertebrae[0]["id"] if vertebrae else ""
            if self.state.ss_merge_with not in ids:
                self.state.ss_merge_with = ""
        self._sync_editor_segment()

    def _sync_editor_segment(self) -> None:
        """Keep the segment editor on an existing segment (corrections rename segment IDs)."""
        ids = self.editor.get_segment_ids()
        if not ids:
            return
        if self.state.ss_selected in ids and self.editor.get_active_segment_id() != self.state.ss_selected:
            self.editor.set_active_segment_id(self.state.ss_selected)
        elif self.editor.get_active_segment_id() not in ids:
            self.editor.set_active_segment_id(ids[0])

    @guarded("Jumping to the vertebra")
    def jump_to_vertebra(self, segment_id: str):
        found = next((v for v in self.state.ss_vertebrae if v["id"] == segment_id), None)
        if found is None:
            raise InputError(f"no vertebra {segment_id!r}")
        views.jump_to(self.scene, found["centroid_ras"])
        self.editor.set_active_segment_id(segment_id)
        with self.state:
            self.state.ss_selected = segment_id
            self.state.ss_true_name = found["name"]
            self.state.ss_point = ", ".join(f"{c:.1f}" for c in found["centroid_ras"])

    @guarded("Jumping to the lesion")
    def jump_to_lesion(self, lesion_id):
        found = next((les for les in self.state.ss_lesions if str(les["id"]) == str(lesion_id)), None)
        if found is None:
            raise InputError(f"no lesion {lesion_id}")
        views.jump_to(self.scene, found["center_ras"])
        self.state.ss_point = ", ".join(f"{c:.1f}" for c in found["center_ras"])

    # --- output ---------------------------------------------------------------------------------------------------
    def download(self, kind: str):
        """Bytes for the page's download button (a trame attachment), or None with a message."""
        try:
            data = downloads.make(kind, self.corrections.corrections, self._heatmap(),
                                  self.result.table if self.result is not None else None, self.corrections.history)
            self._info(f"Downloading {downloads.file_name(kind)}")
            return self.server.protocol.addAttachment(data)
        except Exception as error:  # noqa: BLE001 - shown on the page
            report(self.state, error, "Download")
            return None

    @guarded("Saving the training case", busy="Saving the case...")
    def save_case(self, dataset: str | None = None, case_id: str | None = None):
        if not self.corrections.active:
            raise InputError("segment a CT first: there is no result to save")
        name = str(dataset if dataset is not None else self.state.ss_dataset or "").strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
            raise InputError("the dataset name must be one folder name (letters, digits, '.', '_', '-')")
        root = Path(self.config.datasets_dir).expanduser().absolute() / name
        case_id = str(case_id if case_id is not None else self.state.ss_case_id or "").strip() or None
        entry = self.corrections.corrections.save_training_case(root, case_id, source="corrected",
                                                                domain="web")
        files = ", ".join(entry[k] for k in ("image", "labels", "lesions"))
        with self.state:
            self.state.ss_saved = f"{root}/{entry['id']}: {files}"
            self.state.ss_case_id = ""
        self._info(f"Saved case {entry['id']} in {root} ({files}).")

    # --- messages -------------------------------------------------------------------------------------------------
    def _info(self, text: str) -> None:
        with self.state:
            self.state.ss_message = text

    def clear_messages(self):
        with self.state:
            self.state.ss_error = ""
            self.state.ss_message = ""

    def close(self) -> None:
        self._cancel_run()
        shutil.rmtree(self.workdir, ignore_errors=True)
