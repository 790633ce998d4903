"""Leave-one-domain-out protocol (``spineseg-train protocol lodo``): for each source domain, train on every other
domain and test on the held-out one.

The training data are the configuration's datasets (SpineSeg format, each case's manifest ``domain``). For each
domain ``D`` the protocol writes *view* datasets without ``D``'s cases — manifests whose entries point at the
original files by absolute path, so nothing is copied — and trains :class:`~spineseg_train.train.Trainer` on them
with the configuration unchanged otherwise (validation data, if any, are filtered the same way). Folds whose
model is already exported are not retrained, and a stopped fold resumes from its ``resume.pt``.

Every fold model is then evaluated on the test cases (``test_data``, default the first training dataset; a
curated split with ``test_split``): on all domains by default, giving the cross-domain heatmap (rows: the fold
models, columns: the test domains; the diagonal-free cells are training domains of that fold), or only on its
held-out domain with ``held_out_only``.

    OUT/folds/<domain>/data<i>/dataset.json   the views
    OUT/folds/<domain>/run/                   the fold's run folder (config.yaml, resume.pt)
    OUT/folds/<domain>/model/                 the fold's exported checkpoint
    OUT/report/                               report.json, report.md, cases.csv, figures
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from SpineSegLib.checkpoint import CARD_FILE, load_checkpoint
from SpineSegLib.inference import Segmenter, resolve_device
from SpineSegLib.io import write_json

from ..config import TrainConfig
from ..dataset import new_manifest, read_manifest
from ..datasets import split_ids
from .cases import evaluation_cases
from .conditions import Condition, run_conditions
from .report import write_report
from .summary import interval, vertebra_values


def dataset_domains(paths: list[str]) -> list[str]:
    domains = set()
    for path in paths:
        domains |= {str(e.get("domain")) for e in read_manifest(path)["cases"]}
    return sorted(domains)


def write_view(source: str | Path, target: Path, keep) -> int:
    """A manifest at ``target`` with the entries of ``source`` for which ``keep(entry)``, by absolute path."""
    source = Path(source).absolute()
    manifest = read_manifest(source)
    view = new_manifest(f"{manifest.get('name', source.name)} (view)")
    for entry in manifest["cases"]:
        if keep(entry):
            view["cases"].append({**entry, **{k: str(source / entry[k]) for k in ("image", "labels", "lesions")
                                              if k in entry}})
    target.mkdir(parents=True, exist_ok=True)
    write_json(target / "dataset.json", view)
    return len(view["cases"])


def fold_config(config: TrainConfig, domain: str, fold_dir: Path, train_split: str | None) -> TrainConfig:
    document = config.to_dict()
    stages = []
    for index, stage in enumerate(config.data):
        wanted = split_ids(stage.path, train_split) if train_split else None

        def keep(entry, wanted=wanted):
            return str(entry.get("domain")) != domain and (wanted is None or entry["id"] in wanted)

        view = fold_dir / f"data{index}"
        if write_view(stage.path, view, keep):
            stages.append({**document["data"][index], "path": str(view)})
    if not stages:
        raise ValueError(f"without domain {domain!r} there is no training data left")
    document["data"] = stages
    if config.val_data:
        view = fold_dir / "val"
        if write_view(config.val_data, view, lambda e: str(e.get("domain")) != domain):
            document["val_data"] = str(view)
        else:
            document["val_data"], document["val_every"] = None, 0
    if config.domains:
        document["domains"] = [d for d in config.domains if d != domain]
    document["name"] = f"{config.name}-without-{domain}"
    return TrainConfig.from_dict(document)


def train_fold(config: TrainConfig, fold_dir: Path, log=print) -> Path:
    from ..train import Trainer

    model_dir = fold_dir / "model"
    if (model_dir / CARD_FILE).is_file():
        log(f"{fold_dir.name}: model already exported, not retrained")
        return model_dir
    trainer = Trainer(config, fold_dir / "run", log=log)
    try:
        config.to_yaml(fold_dir / "run" / "config.yaml")
        trainer.load_data()
        trainer.try_resume()
        started = time.time()
        trainer.fit()
        described = ", ".join(f"{d.path} at {d.spacing} mm" for d in config.data)
        card = trainer.model_card("spineseg-train protocol lodo", time.time() - started, described)
        trainer.export(model_dir, card)
    finally:
        trainer.close()
    return model_dir


def lodo(config: TrainConfig, out_dir: str | Path, *, test_data: str | None = None, test_split: str | None = None,
         train_split: str | None = None, held_out_only: bool = False, domains: list[str] | None = None,
         device: str = "auto", fast: bool = True, n_resamples: int = 10_000, seed: int = 0, surface: bool = True,
         log=print) -> dict:
    out_dir = Path(out_dir)
    config.validate()
    all_domains = dataset_domains([d.path for d in config.data])
    folds = domains or all_domains
    if len(all_domains) < 2:
        raise ValueError(f"leave-one-domain-out needs at least two domains; the data have {all_domains}")
    unknown = sorted(set(folds) - set(all_domains))
    if unknown:
        raise ValueError(f"domains {unknown} are not in the training data ({', '.join(all_domains)})")
    models = {}
    for domain in folds:
        fold_dir = out_dir / "folds" / domain
        log(f"--- fold: train without {domain} ---")
        models[domain] = train_fold(fold_config(config, domain, fold_dir, train_split), fold_dir, log)
    test_data = test_data or config.data[0].path
    cases = evaluation_cases(test_data, split=test_split)
    torch_device = resolve_device(device)
    conditions = []
    for domain, model_dir in models.items():
        segmenter = Segmenter(load_checkpoint(model_dir, torch_device), device=device, fast=fast)

        def run(case, segmenter=segmenter, domain=domain):
            if held_out_only and str(case.meta.get("domain")) != domain:
                return None
            return segmenter(case.ct)

        conditions.append(Condition(f"without {domain}", run, str(model_dir)))
    results = run_conditions(conditions, cases, surface, log)
    rows = []
    for domain in folds:
        scores = results[f"without {domain}"]
        held = [s for s in scores if s.domain == domain]
        seen = [s for s in scores if s.domain != domain]
        rows.append({"held-out domain": domain, "test cases": len(held),
                     "held-out Dice": interval(*vertebra_values(held, "dice"), n_resamples, seed),
                     "held-out ID rate": interval(*vertebra_values(held, "identified"), n_resamples, seed),
                     "training-domain Dice": interval(*vertebra_values(seen, "dice"), n_resamples, seed)
                     if seen else float("nan")})
    gaps = [r["training-domain Dice"]["estimate"] - r["held-out Dice"]["estimate"] for r in rows
            if isinstance(r["training-domain Dice"], dict)]
    notes = ["Rows: the model trained without that domain; 'held-out' = its test cases of that domain. "
             "Training-domain Dice is measured on the test data's cases of the fold's training domains."]
    if gaps:
        notes.append(f"Mean domain gap (training-domain minus held-out Dice): {float(np.nanmean(gaps)):.3f}.")
    return write_report(out_dir / "report", "Leave-one-domain-out", results, n_resamples=n_resamples, seed=seed,
                        column="fold", what="fold", notes=notes, tables={"Leave-one-domain-out": rows},
                        settings={"training data": [d.path for d in config.data], "test data": test_data,
                                  "test split": test_split, "train split": train_split, "domains": folds,
                                  "architecture": config.architecture, "steps": config.steps,
                                  "evaluated on": "held-out domain only" if held_out_only else "every domain",
                                  "mode": "fast" if fast else "full"},
                        extra={"models": {d: str(p) for d, p in models.items()}})
