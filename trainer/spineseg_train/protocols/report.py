"""Writing a report of conditions (models, perturbations, adaptation methods, domain codes) into a folder:

    report.json              settings, per-condition summaries with 95 % BCa intervals, paired tests, per-case rows
    report.md                the same for reading, with the figures
    cases.csv                one row per condition and case (columns: see CASE_COLUMNS, then dice_<vertebra>)
    dice_per_vertebra.png    per-vertebra Dice box plots
    precision_recall.png     lesion precision-recall curves (class-agnostic, IoU >= 0.3 and <= 5 mm)
    domain_heatmap.png       mean Dice, conditions x domains (the cross-domain view)
    region_heatmap.png       mean Dice, conditions x spinal regions
"""

from __future__ import annotations

import csv
import io
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import SpineSegLib
from SpineSegLib.io import atomic_write_bytes, write_json

from ..metrics import REGIONS, average_precision, precision_recall_curve
from . import plots
from .scoring import CaseScore
from .significance import compare_with_reference
from .summary import pooled_from_parts, scan_rankings, summarise

CASE_COLUMNS = ("case", "patient", "domain", "source", "seconds", "mean_dice", "min_dice", "dice_cervical",
                "dice_thoracic", "dice_lumbar", "dice_sacral", "id_rate", "id_accuracy", "localisation_mm",
                "hd95_mm", "assd_mm", "vertebrae_ref", "vertebrae_pred", "lesions_ref", "lesions_pred")
FIGURES = {"dice_per_vertebra": "dice_per_vertebra.png", "precision_recall": "precision_recall.png",
           "domain_heatmap": "domain_heatmap.png", "region_heatmap": "region_heatmap.png"}


def fmt(entry: dict | float | None, digits: int = 3) -> str:
    if entry is None:
        return "n/a"
    if isinstance(entry, dict):
        value, low, high = entry.get("estimate"), entry.get("low"), entry.get("high")
        if value is None or math.isnan(value):
            return "n/a"
        if low is None or math.isnan(low) or math.isnan(high):
            return f"{value:.{digits}f}"
        return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
    return "n/a" if math.isnan(entry) else f"{entry:.{digits}f}"


def _csv_value(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else round(value, 6)
    return value


def write_cases_csv(path: Path, results: dict[str, list[CaseScore]], column: str) -> list[str]:
    rows = [s.row for scores in results.values() for s in scores]
    extra = [k for k in (rows[0] if rows else {}) if k not in CASE_COLUMNS and k != "condition"]
    header = [column, *CASE_COLUMNS, *extra]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get("condition")] + [_csv_value(row.get(k, "")) for k in header[1:]])
    atomic_write_bytes(path, buffer.getvalue().encode())
    return header


def build(results: dict[str, list[CaseScore]], reference: str | None, n_resamples: int, seed: int) -> dict:
    summaries = {name: summarise(scores, n_resamples, seed) for name, scores in results.items()}
    comparisons = compare_with_reference(results, reference) if reference and len(results) > 1 else []
    return {"summaries": summaries, "comparisons": comparisons}


def draw_figures(out_dir: Path, results: dict[str, list[CaseScore]], summaries: dict, what: str) -> dict:
    files = {}
    files["dice_per_vertebra"] = plots.dice_boxplot(
        out_dir / FIGURES["dice_per_vertebra"], {n: [v for s in sc for v in s.vertebrae] for n, sc in results.items()},
        f"Dice per vertebra by {what}").name
    curves = {}
    for name, scores in results.items():
        ranking = pooled_from_parts(scan_rankings(scores))
        precision, recall = precision_recall_curve(ranking)
        curves[name] = (precision, recall, average_precision(precision, recall) if ranking["n_refs"] else np.nan)
    files["precision_recall"] = plots.pr_curves(out_dir / FIGURES["precision_recall"], curves).name
    domains = sorted({d for s in summaries.values() for d in s["dice_by_domain"]})
    matrix = [[summaries[n]["dice_by_domain"].get(d, {}).get("estimate", np.nan) for d in domains] for n in results]
    files["domain_heatmap"] = plots.heatmap(out_dir / FIGURES["domain_heatmap"], np.array(matrix, dtype=float),
                                            list(results), domains, f"Mean vertebra Dice: {what} × test domain").name
    matrix = [[summaries[n]["dice_by_region"].get(r, {}).get("estimate", np.nan) for r in REGIONS] for n in results]
    files["region_heatmap"] = plots.heatmap(out_dir / FIGURES["region_heatmap"], np.array(matrix, dtype=float),
                                            list(results), list(REGIONS), f"Mean vertebra Dice: {what} × region").name
    return files


def markdown(document: dict, column: str) -> str:
    summaries, notes = document["summaries"], document.get("notes", [])
    lines = [f"# {document['title']}", "", f"{document['created']}, SpineSeg {document['code_version']}. "
             f"Intervals: 95 % BCa bootstrap over patients, {document['settings']['n_resamples']} replicates "
             f"(seed {document['settings']['seed']}).", ""]
    for key, value in document["settings"].items():
        if key not in ("n_resamples", "seed"):
            lines.append(f"- **{key}**: {value}")
    lines += ["", "## Summary", "",
              f"| {column} | cases | patients | vertebra Dice | ID rate | ID accuracy | HD95 mm | ASSD mm | "
              "lesion AP | FROC @1 FP | FROC @4 FP |", "| --- |" + " ---: |" * 10]
    for name, s in summaries.items():
        les = s["lesions"]
        lines.append(f"| {name} | {s['cases']} | {s['patients']} | {fmt(s['mean_vertebra_dice'])} | "
                     f"{fmt(s['identification_rate'])} | {fmt(s['id_accuracy'])} | {fmt(s['hd95_mm'], 1)} | "
                     f"{fmt(s['assd_mm'], 2)} | {fmt(les['ap'])} | {fmt(les['froc_at_1fp'])} | "
                     f"{fmt(les['froc_at_4fp'])} |")
    lines += ["", "## Dice by spinal region", "", f"| {column} | " + " | ".join(REGIONS) + " |",
              "| --- |" + " ---: |" * len(REGIONS)]
    for name, s in summaries.items():
        lines.append(f"| {name} | " + " | ".join(fmt(s["dice_by_region"].get(r)) for r in REGIONS) + " |")
    lines += ["", "## Identification rate by spinal region", "", f"| {column} | " + " | ".join(REGIONS) + " |",
              "| --- |" + " ---: |" * len(REGIONS)]
    for name, s in summaries.items():
        lines.append(f"| {name} | " + " | ".join(fmt(s["id_rate_by_region"].get(r)) for r in REGIONS) + " |")
    domains = sorted({d for s in summaries.values() for d in s["dice_by_domain"]})
    lines += ["", "## Dice by domain", "", f"| {column} | " + " | ".join(domains) + " |",
              "| --- |" + " ---: |" * len(domains)]
    for name, s in summaries.items():
        lines.append(f"| {name} | " + " | ".join(fmt(s["dice_by_domain"].get(d)) for d in domains) + " |")
    if document["comparisons"]:
        reference = document["comparisons"][0]["reference"]
        lines += ["", f"## Paired comparison with {reference}", "",
                  "Two-sided Wilcoxon signed-rank test on per-patient means (model − reference), Holm-corrected "
                  "over the comparisons of each metric.", "",
                  f"| metric | {column} | patients | median difference | p | p (Holm) | significant at 0.05 |",
                  "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
        for c in document["comparisons"]:
            lines.append(f"| {c['metric']} | {c['condition']} | {c['n_patients']} | {fmt(c['median_difference'], 4)}"
                         f" | {fmt(c['p'], 4)} | {fmt(c.get('p_holm', float('nan')), 4)} | "
                         f"{'yes' if c.get('significant') else 'no'} |")
    for section, rows in document.get("tables", {}).items():
        if rows:
            header = list(rows[0])
            lines += ["", f"## {section}", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
            lines += ["| " + " | ".join(str(fmt(r[h]) if isinstance(r[h], (float, dict)) else r[h]) for h in header)
                      + " |" for r in rows]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines += ["", "## Figures", ""] + [f"![{k}]({v})" for k, v in document["files"].items() if v.endswith(".png")]
    lines += ["", f"Per-case values: [{document['files']['cases']}]({document['files']['cases']})."]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, title: str, results: dict[str, list[CaseScore]], *,
                 reference: str | None = None, n_resamples: int = 10_000, seed: int = 0, column: str = "condition",
                 what: str = "condition", settings: dict | None = None, notes: list[str] | None = None,
                 tables: dict | None = None, extra: dict | None = None) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    built = build(results, reference, n_resamples, seed)
    document = {"title": title, "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "code_version": SpineSegLib.__version__,
                "settings": {"n_resamples": n_resamples, "seed": seed, "reference": reference, **(settings or {})},
                **built, "notes": list(notes or []), "tables": tables or {}, "extra": extra or {}}
    document["files"] = {**draw_figures(out_dir, results, built["summaries"], what), "cases": "cases.csv",
                         "markdown": "report.md", "json": "report.json"}
    document["case_columns"] = write_cases_csv(out_dir / "cases.csv", results, column)
    document["cases"] = {name: [s.row for s in scores] for name, scores in results.items()}
    atomic_write_bytes(out_dir / "report.md", markdown(document, column).encode())
    write_json(out_dir / "report.json", _json_safe(document))
    return document


def _json_safe(value):
    """NaN → null, so the JSON is standard (readable by any parser)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
