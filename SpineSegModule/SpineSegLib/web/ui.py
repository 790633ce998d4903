"""The page: trame-slicer's viewer layout (app bar, tool bar, drawer, the four views) with the SpineSeg panel
and trame-slicer's segment editor (paint, erase, scissors, islands, smoothing, undo/redo) in the drawer."""

from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v3
from trame_slicer.app.ui import (
    ControlButton,
    LayoutButton,
    MprInteractionButton,
    SegmentEditorToolbarUI,
    SegmentEditorUI,
    SegmentEditorUndoRedoUI,
    ViewerLayout,
)

from .panel import build_panel

PANEL = "SpineSegPanel"
EDITOR = SegmentEditorUI.__name__
DRAWER_WIDTH = 420


class SpineSegUI:
    def __init__(self, server, layout_manager, upload_chunk_trigger: str, upload_end_trigger: str):
        ctrl = server.controller
        with ViewerLayout(server, title="SpineSeg", is_drawer_visible=True) as self.layout:
            self.layout.title.set_text("SpineSeg")
            self.layout.drawer.width = DRAWER_WIDTH
            self.layout.typed_state.data.active_tool = PANEL
            with self.layout.appbar:
                html.Span("spine CT segmentation - research use only", classes="text-caption text-medium-emphasis")
                v3.VProgressCircular(v_if=("ss_running",), model_value=("ss_progress",), size=28, width=3,
                                     color="primary", classes="ml-3")
            with self.layout.drawer:
                build_panel(ctrl, upload_chunk_trigger, upload_end_trigger, v_if=(self._is_active(PANEL),),
                            id="ss-panel")
                with html.Div(v_if=(self._is_active(EDITOR),), id="ss-editor", style="height: 100%;"):
                    self.editor_ui = SegmentEditorUI()
            with self.layout.toolbar:
                self._tool_button("SpineSeg", "mdi-spine", PANEL, always=True, id="ss-tool-panel")
                self.layout_button = LayoutButton(classes="mt-1", disabled=(f"!{self.name.is_volume_loaded}",))
                self.mpr_interaction_button = MprInteractionButton(classes="mt-1",
                                                                   disabled=(f"!{self.name.is_volume_loaded}",))
                self._tool_button("segment editor", "mdi-brush", EDITOR, id="ss-tool-editor")
                SegmentEditorToolbarUI(editor_ui=self.editor_ui)
            with self.layout.undo_redo:
                SegmentEditorUndoRedoUI(editor_ui=self.editor_ui)
            with self.layout.content:
                layout_manager.initialize_layout_grid(self.layout)

    @property
    def data(self):
        return self.layout.typed_state.data

    @property
    def name(self):
        return self.layout.typed_state.name

    def _is_active(self, tool: str) -> str:
        return f"{self.name.active_tool} === '{tool}'"

    def _tool_button(self, name: str, icon: str, tool: str, always: bool = False, **kwargs):
        def toggle():
            visible = not self.data.is_drawer_visible or self.data.active_tool != tool
            self.data.is_drawer_visible = visible
            self.data.active_tool = tool if visible else None

        if not always:
            kwargs["disabled"] = (f"!{self.name.is_volume_loaded}",)
        return ControlButton(icon=icon, name=f"Open or close the {name} panel", click=toggle, classes="mt-1",
                             active=(self._is_active(tool),), **kwargs)
