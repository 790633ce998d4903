"""The SpineSeg panel of the page: input, model and Segment, display, vertebrae, corrections, lesions, output.

Plain trame/Vuetify widgets bound to the ``ss_*`` state keys and the controllers' ``ctrl.ss_*`` actions. Elements
the browser tests use carry ``id``s (``ss-segment``, ``ss-vertebrae``...).
"""

from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from .downloads import KINDS

DENSE = {"density": "compact", "hide_details": True}


def _section(title: str, icon: str):
    card = v3.VCard(variant="flat", classes="mb-1")
    with card:
        with v3.VCardItem(classes="py-1"):
            v3.VIcon(icon, size="small", classes="mr-2")
            html.Span(title, classes="text-subtitle-2")
    return card


def build_panel(ctrl, upload_chunk_trigger: str, upload_end_trigger: str, **kwargs):
    with html.Div(style="height: 100%; overflow-y: auto;", classes="pa-1", **kwargs) as panel:
        _messages(ctrl)
        _input(ctrl, upload_chunk_trigger, upload_end_trigger)
        _model(ctrl)
        _display()
        _vertebrae(ctrl)
        _corrections(ctrl)
        _lesions(ctrl)
        _output(ctrl)
        html.Div("Research software, not a medical device; not for diagnosis.",
                 classes="text-caption text-medium-emphasis pa-2")
    return panel


def _messages(ctrl):
    v3.VAlert(v_if=("ss_error",), type="error", variant="tonal", density="compact", closable=True, id="ss-error",
              text=("ss_error",), classes="mb-1", click_close="ss_error = ''")
    v3.VAlert(v_if=("ss_message && !ss_error",), type="success", variant="tonal", density="compact", closable=True,
              id="ss-message", text=("ss_message",), classes="mb-1", click_close="ss_message = ''")
    with html.Div(v_if=("ss_busy",), classes="mb-1", id="ss-busy"):
        v3.VProgressLinear(indeterminate=True, color="primary")
        html.Div("{{ ss_busy_text }}", classes="text-caption")


def _input(ctrl, chunk_trigger: str, end_trigger: str):
    with _section("CT", "mdi-file-image"), v3.VCardText(classes="py-1"):
        v3.VFileInput(
            label="Open a CT (NIfTI, NRRD or zipped DICOM)", id="ss-upload", multiple=True, **DENSE,
            prepend_icon="mdi-upload", disabled=("ss_busy || ss_running",), classes="mb-2",
            change=(
                "ss_busy = true; ss_busy_text = 'Uploading...';"
                "window.load_files_by_chunks($event.target.files, { trigger_name: '" + chunk_trigger + "' })"
                ".then(({ status, errorMsg }) => trigger('" + end_trigger + "', [status ? 'success' : 'failure',"
                " errorMsg]));"
            ),
        )
        with html.Div(classes="d-flex align-center ga-1"):
            v3.VSelect(v_model=("ss_phantom_preset",), items=("ss_phantom_presets",), label="Phantom", **DENSE,
                       style="flex: 3")
            v3.VTextField(v_model=("ss_phantom_seed",), type="number", label="Seed", **DENSE, style="flex: 1")
        v3.VBtn("Generate phantom", id="ss-phantom", click=ctrl.ss_phantom, block=True, variant="tonal",
                prepend_icon="mdi-creation", classes="mt-2", disabled=("ss_busy || ss_running",))
        html.Div("{{ ss_volume_name }} {{ ss_volume_info }}", v_if=("ss_has_volume",), id="ss-volume",
                 classes="text-caption mt-1")


def _model(ctrl):
    with _section("Segment", "mdi-spine"), v3.VCardText(classes="py-1"):
        v3.VSelect(v_model=("ss_model",), items=("ss_models",), label="Model", id="ss-model", **DENSE,
                   no_data_text="no model found")
        html.Div("{{ ss_model_info }}", classes="text-caption text-medium-emphasis mb-1",
                 style="white-space: pre-line;")
        with v3.VBtnToggle(v_model=("ss_fast",), mandatory=True, density="compact", divided=True, variant="outlined",
                           color="primary",
                           classes="mb-2"):
            v3.VBtn("Fast", value=True, id="ss-fast")
            v3.VBtn("Full", value=False, id="ss-full")
        with html.Div(classes="d-flex ga-1"):
            v3.VBtn("Segment", id="ss-segment", color="primary", click=ctrl.ss_segment, prepend_icon="mdi-play",
                    disabled=("!ss_has_volume || ss_running || ss_busy",), style="flex: 2")
            v3.VBtn("Cancel", id="ss-cancel", v_if=("ss_running",), color="warning", click=ctrl.ss_cancel,
                    prepend_icon="mdi-stop", style="flex: 1")
        with html.Div(v_if=("ss_running || ss_run_state === 'done'",), classes="mt-2", id="ss-progress"):
            v3.VProgressLinear(model_value=("ss_progress",), height=14, color="primary", rounded=True)
            html.Div("{{ ss_stage }} {{ Math.round(ss_progress) }}% ({{ ss_run_seconds }} s)",
                     classes="text-caption", id="ss-stage")


def _display():
    with _section("Lesion heatmap", "mdi-fire"), v3.VCardText(classes="py-1"):
        v3.VSlider(v_model=("ss_heat_opacity",), min=0, max=1, step=0.05, label="Opacity", **DENSE,
                   disabled=("!ss_has_result",), id="ss-heat-opacity", thumb_label=True)
        v3.VSlider(v_model=("ss_heat_threshold",), min=0, max=1, step=0.05, label="Threshold", **DENSE,
                   disabled=("!ss_has_result",), id="ss-heat-threshold", thumb_label=True)


def _vertebrae(ctrl):
    with _section("Vertebrae", "mdi-format-list-numbered"), v3.VCardText(classes="py-0"):
        html.Div("Segment a CT to list its vertebrae.", v_if=("!ss_vertebrae.length",), classes="text-caption")
        with v3.VTable(density="compact", v_if=("ss_vertebrae.length",), id="ss-vertebrae", hover=True):
            with html.Thead(), html.Tr():
                for title in ("", "Vertebra", "Label", "Volume (ml)", "Lesions"):
                    html.Th(title)
            with html.Tbody():
                with html.Tr(v_for="v in ss_vertebrae", key="v.id", click=(ctrl.ss_jump_vertebra, "[v.id]"),
                             classes=("v.id === ss_selected ? 'ss-vertebra bg-primary' : 'ss-vertebra'",),
                             style="cursor: pointer;"):
                    with html.Td():
                        v3.VIcon("mdi-circle", color=("v.color",), size="small")
                    html.Td("{{ v.name }}", classes="ss-vertebra-name")
                    html.Td("{{ v.label }}")
                    html.Td("{{ v.volume_ml }}", classes="ss-vertebra-volume")
                    html.Td("{{ v.lesions }}")


def _corrections(ctrl):
    with _section("Correct", "mdi-wrench"), v3.VCardText(classes="py-1"):
        html.Div("Selected: {{ ss_selected || '-' }}; slice crossing: {{ ss_point || 'not set' }}",
                 classes="text-caption mb-1", id="ss-selected")
        with html.Div(classes="d-flex align-center ga-1 mb-1"):
            v3.VSelect(v_model=("ss_true_name",), items=("ss_names",), label="True name", id="ss-true-name",
                       **DENSE, style="flex: 1")
            v3.VBtn("Renumber", id="ss-renumber", click=(ctrl.ss_renumber, "[ss_selected, ss_true_name]"),
                    variant="tonal", disabled=("!ss_has_result || !ss_selected",))
        with html.Div(classes="d-flex ga-1 mb-1"):
            v3.VBtn("Shift up", click=(ctrl.ss_shift, "[-1]"), variant="tonal", size="small", id="ss-shift-up",
                    prepend_icon="mdi-arrow-up", disabled=("!ss_has_result",), style="flex: 1")
            v3.VBtn("Shift down", click=(ctrl.ss_shift, "[1]"), variant="tonal", size="small", id="ss-shift-down",
                    prepend_icon="mdi-arrow-down", disabled=("!ss_has_result",), style="flex: 1")
        with html.Div(classes="d-flex align-center ga-1 mb-1"):
            v3.VSelect(v_model=("ss_merge_with",), items=("ss_vertebrae.filter(v => v.id !== ss_selected)",),
                       item_title="name", item_value="id", label="Merge with", id="ss-merge-with", **DENSE,
                       style="flex: 1")
            v3.VBtn("Merge", click=(ctrl.ss_merge, "[ss_selected, ss_merge_with]"), variant="tonal", id="ss-merge",
                    disabled=("!ss_has_result || !ss_merge_with",))
        with html.Div(classes="d-flex ga-1 mb-1"):
            v3.VBtn("Split at crossing", click=(ctrl.ss_split_plane, "[ss_selected]"), variant="tonal", size="small",
                    id="ss-split-plane",
                    disabled=("!ss_has_result || !ss_selected",), style="flex: 1")
            v3.VBtn("Split parts", click=(ctrl.ss_split_components, "[ss_selected]"), variant="tonal", size="small",
                    id="ss-split-components", disabled=("!ss_has_result || !ss_selected",), style="flex: 1")
        with html.Div(classes="d-flex ga-1"):
            v3.VBtn("Undo", click=ctrl.ss_undo, variant="tonal", size="small", id="ss-undo", prepend_icon="mdi-undo",
                    disabled=("!ss_can_undo",), style="flex: 1")
            v3.VBtn("Redo", click=ctrl.ss_redo, variant="tonal", size="small", id="ss-redo", prepend_icon="mdi-redo",
                    disabled=("!ss_can_redo",), style="flex: 1")
        html.Div("Paint, erase, scissors, islands and smoothing: the brush button on the left.",
                 classes="text-caption text-medium-emphasis mt-1")


def _lesions(ctrl):
    with _section("Lesions", "mdi-target"), v3.VCardText(classes="py-0"):
        html.Div("No lesion.", v_if=("!ss_lesions.length",), classes="text-caption")
        with v3.VList(density="compact", v_if=("ss_lesions.length",), id="ss-lesions"):
            with v3.VListItem(v_for="les in ss_lesions", key="les.id", click=(ctrl.ss_jump_lesion, "[les.id]"),
                              classes="ss-lesion px-1"):
                html.Div("#{{ les.id }} {{ les.vertebra }} {{ les.class }} ({{ les.score }}, {{ les.size_mm }} mm)",
                         classes="text-body-2 ss-lesion-text")
                with v3.Template(v_slot_append=True):
                    v3.VSelect(model_value=("les.class",), items=("ss_lesion_classes",), density="compact",
                               hide_details=True, variant="plain", style="width: 110px;",
                               click="$event.stopPropagation()",
                               update_modelValue="trigger('ss_lesion_class', [les.id, $event])")
                    v3.VBtn(icon="mdi-delete-outline", size="x-small", variant="text", classes="ss-lesion-delete",
                            click="$event.stopPropagation(); trigger('ss_delete_lesion', [les.id])")
        with html.Div(classes="d-flex align-center ga-1 my-1"):
            v3.VSelect(v_model=("ss_lesion_class",), items=("ss_lesion_classes",), label="Class", **DENSE,
                       style="flex: 2")
            v3.VTextField(v_model=("ss_lesion_size",), type="number", label="mm", **DENSE, style="flex: 1")
        v3.VBtn("Add lesion at crossing", click=(ctrl.ss_add_lesion, "[ss_lesion_class, ss_lesion_size]"),
                variant="tonal", size="small", block=True,
                id="ss-add-lesion", disabled=("!ss_has_result",))


def _output(ctrl):
    with _section("Save", "mdi-content-save"), v3.VCardText(classes="py-1"):
        with html.Div(classes="d-flex flex-wrap ga-1 mb-2"):
            for kind, (name, mime) in KINDS.items():
                v3.VBtn(name, size="x-small", variant="outlined", id=f"ss-download-{kind}",
                        disabled=("!ss_has_result",),
                        click=f"utils.download('{name}', trigger('ss_download', ['{kind}']), '{mime}')")
        with html.Div(classes="d-flex align-center ga-1"):
            v3.VTextField(v_model=("ss_dataset",), label="Dataset", id="ss-dataset", **DENSE, style="flex: 1")
            v3.VTextField(v_model=("ss_case_id",), label="Case id (optional)", id="ss-case-id", **DENSE,
                          style="flex: 1")
        v3.VBtn("Save as training case", click=(ctrl.ss_save_case, "[ss_dataset, ss_case_id]"), block=True,
                variant="tonal", classes="mt-2",
                id="ss-save", prepend_icon="mdi-database-plus", disabled=("!ss_has_result || ss_busy",))
        html.Div("{{ ss_saved }}", v_if=("ss_saved",), id="ss-saved", classes="text-caption mt-1",
                 style="word-break: break-all;")
