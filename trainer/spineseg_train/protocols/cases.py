"""The cases a protocol evaluates: a dataset folder in any supported layout (optionally one curated split and the
first N cases), read lazily (fresh evaluation phantoms come from ``evaluate.phantom_cases``)."""

from __future__ import annotations

from pathlib import Path

from ..datasets import ReadOptions, SourceCase, open_dataset, split_ids


def evaluation_cases(data: str | Path, layout: str = "auto", split: str | None = None, limit: int | None = None,
                     options: ReadOptions | None = None, domains: list[str] | None = None) -> list[SourceCase]:
    cases = open_dataset(data, layout, options)
    if split:
        wanted = split_ids(data, split)
        cases = [c for c in cases if c.case_id in wanted]
    if domains is not None:
        cases = [c for c in cases if str(c.meta.get("domain")) in domains]
    if not cases:
        raise ValueError(f"{data}: no cases to evaluate" + (f" in split {split!r}" if split else ""))
    return cases[:limit] if limit else cases

