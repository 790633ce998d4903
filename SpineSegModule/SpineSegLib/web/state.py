"""The session's state shared with the page (trame state keys, all prefixed ``ss_``) and their defaults."""

from __future__ import annotations

from ..labels import load_label_table
from ..numbering import vertebra_sequence
from ..scene import DEFAULT_HEATMAP_OPACITY, DEFAULT_HEATMAP_THRESHOLD

PHANTOM_PRESETS = {  # title -> PhantomConfig settings (2 mm voxels: quick on a CPU)
    "Small lumbar (64x64x96)": {"region": "lumbar", "shape": (64, 64, 96), "spacing": (2.0, 2.0, 2.0)},
    "Lumbar": {"region": "lumbar", "spacing": (2.0, 2.0, 2.0)},
    "Thoracolumbar": {"region": "thoracolumbar", "spacing": (2.0, 2.0, 2.0)},
    "Cervical": {"region": "cervical", "spacing": (2.0, 2.0, 2.0)},
    "Whole spine": {"region": "whole", "spacing": (2.5, 2.5, 2.5)},
}


def defaults() -> dict:
    table = load_label_table()
    return {
        # messages and busy indicator
        "ss_error": "",
        "ss_message": "",
        "ss_busy": False,
        "ss_busy_text": "",
        # input
        "ss_has_volume": False,
        "ss_volume_name": "",
        "ss_volume_info": "",
        "ss_phantom_preset": next(iter(PHANTOM_PRESETS)),
        "ss_phantom_presets": list(PHANTOM_PRESETS),
        "ss_phantom_seed": 3,
        # model and run
        "ss_models": [],
        "ss_model": "",
        "ss_model_info": "",
        "ss_fast": True,
        "ss_running": False,
        "ss_progress": 0.0,
        "ss_stage": "",
        "ss_run_state": "idle",
        "ss_run_seconds": 0.0,
        # result and display
        "ss_has_result": False,
        "ss_heat_opacity": DEFAULT_HEATMAP_OPACITY,
        "ss_heat_threshold": DEFAULT_HEATMAP_THRESHOLD,
        "ss_vertebrae": [],
        "ss_lesions": [],
        # corrections
        "ss_selected": "",
        "ss_true_name": "",
        "ss_merge_with": "",
        "ss_names": vertebra_sequence(table, t13=True, l6=True),
        "ss_lesion_classes": table.lesion_class_names,
        "ss_lesion_class": table.lesion_class_names[0],
        "ss_lesion_size": 10.0,
        "ss_point": "",
        "ss_can_undo": False,
        "ss_can_redo": False,
        "ss_undo_text": "",
        # saving
        "ss_dataset": "corrected",
        "ss_case_id": "",
        "ss_saved": "",
    }


def apply_defaults(state) -> None:
    for key, value in defaults().items():
        state.setdefault(key, value)
