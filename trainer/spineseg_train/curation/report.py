"""The curation report: ``curation.json`` (everything) and ``curation.md`` (for reading)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from SpineSegLib.io import atomic_write_bytes, write_json


def split_counts(report: dict) -> dict:
    """``{"total": {split: cases}, "strata": {"domain / pathology": {split: cases}}, "patients": {split: n}}``."""
    cases = report["cases"]
    total = Counter(c["split"] for c in cases)
    strata: dict[str, Counter] = {}
    for group in report["groups"]:
        key = " / ".join(group["stratum"])
        strata.setdefault(key, Counter())[group["split"]] += len(group["cases"])
    patients = {split: len({c["patient"] for c in cases if c["split"] == split}) for split in total}
    return {"total": dict(total), "strata": {k: dict(v) for k, v in sorted(strata.items())}, "patients": patients}


def write_curation_report(out_dir: str | Path, report: dict) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "curation.json", report)
    splits = list(report["settings"]["fractions"])
    counts = report["counts"]
    lines = [f"# Curation of {report['dataset']}", "",
             f"{len(report['cases'])} cases, {len({c['patient'] for c in report['cases']})} patients, "
             f"{len(report['groups'])} groups; seed {report['settings']['seed']}, near-duplicates at Hamming "
             f"distance < {report['settings']['max_distance']} of {report['settings']['hash_bits']} bits.", "",
             "## Splits", "", "| stratum (domain / pathology) | " + " | ".join(splits) + " |",
             "| --- | " + " | ".join("---:" for _ in splits) + " |"]
    for stratum, row in counts["strata"].items():
        lines.append(f"| {stratum} | " + " | ".join(str(row.get(s, 0)) for s in splits) + " |")
    lines.append("| **all cases** | " + " | ".join(str(counts["total"].get(s, 0)) for s in splits) + " |")
    lines.append("| **patients** | " + " | ".join(str(counts["patients"].get(s, 0)) for s in splits) + " |")
    lines += ["", "## Near-duplicates", ""]
    if report["duplicates"]:
        lines += ["| case | case | Hamming distance | same patient |", "| --- | --- | ---: | --- |"]
        lines += [f"| {d['a']} | {d['b']} | {d['distance']} | {'yes' if d['same_patient'] else 'no'} |"
                  for d in report["duplicates"]]
    else:
        lines.append("None found.")
    lines += ["", "## Shared identifiers", ""]
    shared = [(key, value, cases) for key, values in report["links"].items() for value, cases in values.items()]
    if shared:
        lines += ["| identifier | value | cases |", "| --- | --- | --- |"]
        lines += [f"| {key} | {value} | {', '.join(cases)} |" for key, value, cases in shared]
    else:
        lines.append("No patient id, study UID or series UID is shared by two cases.")
    lines += ["", "## Groups of more than one case", ""]
    multi = [g for g in report["groups"] if len(g["cases"]) > 1]
    if multi:
        lines += ["| group | split | cases | why |", "| --- | --- | --- | --- |"]
        lines += [f"| {g['id']} | {g['split']} | {', '.join(g['cases'])} | {'; '.join(g['reasons'])} |"
                  for g in multi]
    else:
        lines.append("Every case is its own group.")
    if report["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    markdown = out_dir / "curation.md"
    atomic_write_bytes(markdown, ("\n".join(lines) + "\n").encode())
    return out_dir / "curation.json", markdown
