"""Converting any supported layout into SpineSeg's dataset format (``spineseg-train convert``).

Cases are written with :func:`spineseg_train.dataset.add_case` (files first, manifest last); cases already in the
target are skipped, so a stopped conversion resumes. A case that fails (unknown label values, a label file off
the CT's grid, a non-CT image) is reported with its reason and the others go on. ``conversion_report.json`` in
the target lists what was converted, skipped and failed, and the label mapping used.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from SpineSegLib.errors import InputError
from SpineSegLib.io import write_json

from ..dataset import MANIFEST, add_case, read_manifest
from .base import ReadOptions
from .layouts import detect_layout, open_dataset

REPORT = "conversion_report.json"


def convert_dataset(source: str | Path, target: str | Path, layout: str = "auto",
                    options: ReadOptions | None = None, limit: int | None = None, name: str | None = None,
                    log=print) -> dict:
    source, target = Path(source), Path(target)
    layout = detect_layout(source) if layout in (None, "auto") else layout
    options = options or ReadOptions()
    cases = open_dataset(source, layout, options)[:limit]
    done = {e["id"] for e in read_manifest(target)["cases"]} if (target / MANIFEST).is_file() else set()
    report = {"source": str(source), "layout": layout, "target": str(target), "converted": [], "skipped": [],
              "failed": [], "label_reports": {}}
    started = time.time()
    for index, source_case in enumerate(cases):
        if source_case.case_id in done:
            report["skipped"].append(source_case.case_id)
            continue
        try:
            case = source_case.load()
            if not np.any(case.labels.array):
                raise ValueError("no vertebra label after mapping")
            label_report = case.meta.pop("label_report", None)
            case.meta["origin"] = source_case.files
            add_case(target, case, name=name or target.name)
        except (ValueError, OSError, KeyError, InputError) as error:
            report["failed"].append({"case": source_case.case_id, "error": str(error)})
            log(f"[{index + 1}/{len(cases)}] {source_case.case_id}: FAILED: {error}")
            continue
        if label_report:
            report["label_reports"][case.case_id] = label_report
        report["converted"].append(case.case_id)
        log(f"[{index + 1}/{len(cases)}] {case.case_id}: {len(np.unique(case.labels.array)) - 1} vertebrae, "
            f"{len(case.lesions)} lesions")
    report["seconds"] = round(time.time() - started, 1)
    target.mkdir(parents=True, exist_ok=True)
    write_json(target / REPORT, report)
    return report
