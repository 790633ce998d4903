"""``spineseg-train evaluate --model M1 [--model M2 ...] --data D --report DIR [--baseline M1]``: every model on the
same cases, a report with 95 % patient-level BCa intervals and, with a baseline, paired Wilcoxon tests with Holm's
correction (:mod:`.report`)."""

from __future__ import annotations

from pathlib import Path

from SpineSegLib.checkpoint import LoadedModel, load_checkpoint
from SpineSegLib.inference import Segmenter, resolve_device

from .conditions import Condition, run_conditions
from .report import write_report


def load_models(models: list[str], device: str = "auto") -> dict[str, LoadedModel]:
    """``{display name: model}``: the card name, or the folder name (then the path) where names repeat."""
    loaded = [load_checkpoint(m, resolve_device(device)) for m in models]
    names = [m.card.get("name", Path(p).name) for m, p in zip(loaded, models)]
    if len(set(names)) < len(names):
        names = [Path(p).name for p in models]
    if len(set(names)) < len(names):
        names = [str(p) for p in models]
    return dict(zip(names, loaded))


def resolve_baseline(baseline: str | None, models: list[str], names: list[str]) -> str | None:
    if baseline is None:
        return None
    for given, name in zip(models, names):
        if baseline in (given, name, Path(given).name) or Path(baseline).resolve() == Path(given).resolve():
            return name
    raise ValueError(f"--baseline {baseline!r} is none of the models given ({', '.join(models)})")


def model_condition(name: str, model: LoadedModel, device: str, fast: bool) -> Condition:
    segmenter = Segmenter(model, device=device, fast=fast)
    return Condition(name, lambda case: segmenter(case.ct), f"{model.path} ({'fast' if fast else 'full'})")


def evaluate_models(models: list[str], cases, report_dir: str | Path, *, baseline: str | None = None,
                    n_resamples: int = 10_000, seed: int = 0, device: str = "auto", fast: bool = False,
                    surface: bool = True, data_description: str = "", log=print) -> dict:
    loaded = load_models(models, device)
    names = list(loaded)
    reference = resolve_baseline(baseline, models, names)
    conditions = [model_condition(n, m, device, fast) for n, m in loaded.items()]
    results = run_conditions(conditions, cases, surface, log)
    title = "Evaluation of " + ", ".join(names)
    settings = {"data": data_description, "models": {n: str(m.path) for n, m in loaded.items()},
                "mode": "fast (coarse pass)" if fast else "full", "baseline": reference,
                "surface_metrics": surface}
    notes = [] if reference or len(names) == 1 else \
        ["Several models and no --baseline: no paired tests (give --baseline NAME to compare with one)."]
    return write_report(report_dir, title, results, reference=reference, n_resamples=n_resamples, seed=seed,
                        column="model", what="model", settings=settings, notes=notes)
