"""Running several *conditions* — models, perturbations of the input, test-time adaptation methods, domain
codes — over the same cases. A condition is a name and a ``run(case) -> SegmentationResult``; the cases are loaded
one at a time and every condition runs on each, so memory holds one case."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..dataset import Case
from .scoring import CaseScore, score_case, timed


@dataclass
class Condition:
    name: str
    run: Callable[[Case], object]  # -> SpineSegLib.results.SegmentationResult, or None: not run on this case
    note: str = ""


def load_all(cases: Iterable) -> Iterable[Case]:
    """Cases from :class:`~spineseg_train.datasets.SourceCase` (loaded lazily) or Case objects."""
    for case in cases:
        yield case.load() if hasattr(case, "load") else case


def run_conditions(conditions: list[Condition], cases: Iterable, surface: bool = True,
                   log=print) -> dict[str, list[CaseScore]]:
    scores: dict[str, list[CaseScore]] = {c.name: [] for c in conditions}
    for index, case in enumerate(load_all(cases), start=1):
        for condition in conditions:
            result, seconds = timed(condition.run, case)
            if result is None:
                continue
            score = score_case(result, case, seconds, surface)
            score.row = {"condition": condition.name, **score.row}
            scores[condition.name].append(score)
            log(f"case {index} {case.case_id} [{condition.name}]: mean Dice {score.row['mean_dice']:.3f}, "
                f"ID {score.row['id_rate']:.2f}, {seconds:.1f} s")
    return scores
