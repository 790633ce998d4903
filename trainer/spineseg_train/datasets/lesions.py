"""Lesion annotations: the documented JSON format, and fracture grades turned into fracture lesions.

A lesion (docs/data-contract.md) is ``{"center_ras": [x, y, z] mm, "size_mm": float, "class": "fracture" |
"lytic" | "sclerotic", "grade": 1-3 | null, "vertebra": name | null, "vertebra_label": value | null}``; extra keys
are kept. A file holds ``{"lesions": [...]}`` (a bare list is accepted on reading).

Fracture grades (Genant 0–3 per vertebra, as VerSe's fracture grading provides) become one ``fracture`` lesion per
vertebra with grade ≥ 1, centred on the vertebra's centroid, with ``size_mm`` the vertebral body's size estimated
from the mask (:func:`body_size_mm`). Grade files may be:

* CSV, long: columns ``subject`` (or ``case``, ``id``, ``verse_id``), ``vertebra`` (name or label value),
  ``grade`` (also ``fx-g``, ``genant``);
* CSV, wide: a subject column and one column per vertebra, named ``L1`` or ``L1_fx-g`` (``*_fx-s`` columns and
  empty cells are skipped);
* JSON: ``{"subject": {"L1": 2, "T12": 0}}``.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np

from SpineSegLib.labels import load_label_table
from SpineSegLib.volume import Volume

SUBJECT_COLUMNS = ("subject", "case", "id", "verse_id", "case_id", "patient")
GRADE_COLUMNS = ("grade", "fx-g", "fx_g", "genant", "fracture_grade")
VERTEBRA_COLUMNS = ("vertebra", "label", "level")


def normalise_lesion(lesion: dict, where: str = "lesion") -> dict:
    """Check one lesion against the contract and fill its optional keys; raises ValueError saying what is wrong."""
    table = load_label_table()
    if not isinstance(lesion, dict):
        raise ValueError(f"{where}: a lesion is a JSON object, got {lesion!r}")
    record = dict(lesion)
    centre = record.get("center_ras")
    if not isinstance(centre, (list, tuple)) or len(centre) != 3:
        raise ValueError(f"{where}: center_ras must be [x, y, z] in mm (RAS), got {centre!r}")
    record["center_ras"] = [float(c) for c in centre]
    size = record.get("size_mm")
    if isinstance(size, (list, tuple)):
        record["size_mm"] = [float(s) for s in size]
    elif size is None or float(size) <= 0:
        raise ValueError(f"{where}: size_mm must be a positive diameter in mm, got {size!r}")
    else:
        record["size_mm"] = float(size)
    if record.get("class") not in table.lesion_class_names:
        raise ValueError(f"{where}: class must be one of {', '.join(table.lesion_class_names)}, "
                         f"got {record.get('class')!r}")
    grade = record.get("grade")
    if record["class"] != "fracture":
        record["grade"] = None
    elif grade is not None and int(grade) not in (1, 2, 3):
        raise ValueError(f"{where}: a fracture's grade is Genant 1-3 (or null), got {grade!r}")
    name, value = record.get("vertebra"), record.get("vertebra_label")
    if name is not None and value is None:
        record["vertebra_label"] = table.by_name(str(name)).value
    elif value is not None and name is None:
        record["vertebra"] = table.by_value(int(value)).name
    record.setdefault("vertebra", None)
    record.setdefault("vertebra_label", None)
    return record


def read_lesion_file(path: str | Path) -> list[dict]:
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read lesions {path}: {error}") from error
    lesions = document.get("lesions") if isinstance(document, dict) else document
    if not isinstance(lesions, list):
        raise ValueError(f"{path}: expected {{\"lesions\": [...]}}")
    return [normalise_lesion(les, f"{path} lesion {i}") for i, les in enumerate(lesions)]


# --- fracture grades ------------------------------------------------------------------------------------------
def read_fracture_grades(path: str | Path) -> dict[str, dict[int, int]]:
    """``{subject: {label value: Genant grade}}`` from a CSV (long or wide) or JSON file (module docstring)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        document = json.loads(path.read_text())
        if not isinstance(document, dict):
            raise ValueError(f"{path}: expected {{subject: {{vertebra: grade}}}}")
        return {str(s): _grades(v, f"{path} {s}") for s, v in document.items()}
    text = path.read_text(encoding="utf-8-sig")
    dialect = csv.Sniffer().sniff(text.splitlines()[0], delimiters=",;\t") if text.strip() else csv.excel
    rows = list(csv.DictReader(text.splitlines(), dialect=dialect))
    if not rows:
        return {}
    columns = {c.lower().strip(): c for c in rows[0]}
    subject = next((columns[c] for c in SUBJECT_COLUMNS if c in columns), None)
    if subject is None:
        raise ValueError(f"{path}: no subject column (one of {', '.join(SUBJECT_COLUMNS)})")
    grade = next((columns[c] for c in GRADE_COLUMNS if c in columns), None)
    vertebra = next((columns[c] for c in VERTEBRA_COLUMNS if c in columns), None)
    result: dict[str, dict[int, int]] = {}
    if grade and vertebra:  # long form
        for row in rows:
            result.setdefault(row[subject].strip(), {}).update(
                _grades({row[vertebra]: row[grade]}, f"{path} {row[subject]}"))
        return result
    for row in rows:  # wide form
        cells = {}
        for column, value in row.items():
            if column == subject or column is None:
                continue
            name = re.sub(r"[_-]?fx[_-]?g$", "", column.strip(), flags=re.I)
            if re.search(r"fx[_-]?s$", column, re.I) or not _is_vertebra(name):
                continue
            cells[name] = value
        result.setdefault(row[subject].strip(), {}).update(_grades(cells, f"{path} {row[subject]}"))
    return result


def _is_vertebra(name: str) -> bool:
    try:
        load_label_table().by_name(name)
        return True
    except KeyError:
        return False


def _grades(cells: dict, where: str) -> dict[int, int]:
    table = load_label_table()
    grades = {}
    for key, raw in cells.items():
        if raw is None or str(raw).strip() in ("", "nan", "NaN", "-", "NA"):
            continue
        key = str(key).strip()
        label = table.by_value(int(key)) if key.isdigit() else table.by_name(key)
        grade = int(float(raw))
        if grade not in (0, 1, 2, 3):
            raise ValueError(f"{where}: {label.name} has grade {raw!r}; Genant grades are 0-3")
        grades[label.value] = grade
    return grades


def lookup_grades(grades: dict[str, dict[int, int]], *keys: str) -> dict[int, int]:
    """The grades of the first key found. Each key (a VerSe file prefix such as
    ``sub-verse002_split-verse201``, then the subject) is tried as is, without ``sub-``, by its ``split-`` entity
    (``verse201``) and by the digits of those (``201``, ``002``)."""
    for key in keys:
        bare = key.removeprefix("sub-")
        split = re.search(r"split-([A-Za-z0-9]+)", bare)
        subject = bare.split("_")[0]
        candidates = [key, bare]
        if split:
            candidates += [split.group(1), re.sub(r"^\D+", "", split.group(1))]
        else:
            candidates += [subject, re.sub(r"^\D+", "", subject)]
        for candidate in candidates:
            if candidate and candidate in grades:
                return grades[candidate]
    return {}


def body_size_mm(labels: Volume, value: int, centroid_ras: np.ndarray | None = None) -> float:
    """Vertebral body size (mm): mean of the left-right and anterior-posterior extents (5th-95th percentile) of
    the vertebra's voxels anterior of its centroid — the body, without the posterior elements."""
    ijk = np.argwhere(labels.array == value)
    if ijk.size == 0:
        return float("nan")
    if len(ijk) > 200_000:
        ijk = ijk[:: len(ijk) // 200_000 + 1]
    ras = labels.voxel_to_ras(ijk)
    centre = ras.mean(axis=0) if centroid_ras is None else np.asarray(centroid_ras, dtype=float)
    body = ras[ras[:, 1] >= centre[1]]
    if len(body) < 8:
        body = ras
    low, high = np.percentile(body, 5, axis=0), np.percentile(body, 95, axis=0)
    spacing = float(np.mean(labels.spacing))
    return float(np.mean([high[0] - low[0], high[1] - low[1]]) + spacing)


def fracture_lesions(grades: dict[int, int], labels: Volume, centroids: dict[int, np.ndarray]) -> list[dict]:
    """One fracture lesion per vertebra with grade ≥ 1 that is in the label map (at its centroid)."""
    table = load_label_table()
    lesions = []
    for value, grade in sorted(grades.items(), key=lambda item: table.order(item[0])):
        if grade < 1 or value not in centroids:
            continue
        centre = np.asarray(centroids[value], dtype=float)
        lesions.append({"id": len(lesions) + 1, "class": "fracture", "grade": int(grade),
                        "center_ras": [round(float(c), 3) for c in centre],
                        "size_mm": round(body_size_mm(labels, value, centre), 2),
                        "vertebra": table.by_value(value).name, "vertebra_label": int(value),
                        "source": "fracture grade"})
    return lesions
