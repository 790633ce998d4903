"""``spineseg-train compare``: every architecture trained on the same phantom data with the same budget, then
evaluated on held-out phantoms, in the layout of the papers' tables (protocol: ``docs/comparison.md``).

    spineseg-train compare --data DATASET:SPACING [...] --budget-steps N -o DIR [--architectures a,b]

Tables:

1. the improved-SwinUNETR paper's Table 1: mIoU, mDice, mAcc for 3D CNN, 3D U-Net, 3D U-Net + Transformer,
   SwinUNETR, the improved SwinUNETR, UNETR, UNETR-AG, UNETR-MASAG, U-Net-MASAG and Vertebraformer;
2. its ablation: the improved SwinUNETR without multi-scale fusion, without adaptive attention, without both;
3. the VertebraFormer ablation: UNETR-like backbone → + identification → + lesion head → + dynamic modulation,
   with Dice, identification accuracy and lesion AP.

Each run trains in ``DIR/runs/<id>`` (a normal training run folder: resumable mid-run) and writes
``result.json`` when evaluated; a run with a ``result.json`` made with the same settings is skipped, so an
interrupted comparison goes on where it stopped. Results: ``DIR/comparison.md`` and ``DIR/results.json``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from SpineSegLib.checkpoint import load_checkpoint
from SpineSegLib.inference import Segmenter
from SpineSegLib.labels import load_label_table

from .config import StageData, TrainConfig
from .dataset import load_dataset, read_manifest
from .evaluate import EVALUATION_SEED_START
from .metrics import evaluate_lesions, identification_metrics, segmentation_scores
from .phantoms import make_phantom_dataset
from .sampling import PatchSampler, to_stage_grid
from .targets import vertebra_boxes

_VIT = {"feature_size": 8, "hidden_size": 96, "num_layers": 4, "num_heads": 4, "mlp_dim": 192, "img_size": 32}
_VF = {**_VIT, "num_domains": 2, "domain_dim": 16, "roi_size": 2, "id_hidden": 64}
_CONV = {"channels": [8, 16, 32, 64]}
# Swin at 32³: the 1/32 bottleneck is one voxel, where instance norm is undefined, so batch norm (batch 2); windows
# of 4 tokens (4 windows per axis at the first stage, as 7 gives at the papers' 96³ inputs; 7 would pad 16 to 21).
_SWIN = {"feature_size": 12, "depths": [2, 2, 2, 2], "num_heads": [3, 6, 12, 24], "norm_name": "batch",
         "window_size": 4}

DEFAULT_COMPARE = {
    # Shared training settings (TrainConfig keys); --budget-steps sets `steps`. The curriculum is scaled to the
    # budget: epoch_steps = steps / 8, so segmentation alone for the first quarter, the ramp over the second.
    "base": {
        "patch_size": 32, "inference_patch_size": 32, "batch_size": 2, "lr": 5e-4, "weight_decay": 1e-5,
        "warmup_steps": 20, "grad_clip": 1.0, "seg_loss": "ce_dice", "seg_only_epochs": 2, "ramp_epochs": 2,
        "augment": {"elastic": False}, "val_every": 0, "tensorboard": False, "checkpoint_every": 50, "seed": 0,
    },
    "curriculum_epochs_per_budget": 8,
    "eval": {"count": 4, "sw_batch_size": 4, "overlap": 0.25, "id_patches": 16, "lesion_distance_mm": 10.0},
    "runs": [
        {"id": "cnn3d", "architecture": "cnn3d", "args": _CONV},
        {"id": "unet3d", "architecture": "unet3d", "args": {**_CONV, "num_res_units": 1}},
        {"id": "unet3d_transformer", "architecture": "unet3d_transformer",
         "args": {**_CONV, "num_layers": 2, "num_heads": 4}},
        {"id": "swin_unetr", "architecture": "swin_unetr", "args": _SWIN},
        {"id": "swin_unetr_msf_aa", "architecture": "swin_unetr_msf_aa", "args": _SWIN},
        {"id": "swin_unetr_msf_aa-no_msf", "architecture": "swin_unetr_msf_aa",
         "args": {**_SWIN, "multiscale_fusion": False}},
        {"id": "swin_unetr_msf_aa-no_aa", "architecture": "swin_unetr_msf_aa",
         "args": {**_SWIN, "adaptive_attention": False}},
        {"id": "unetr", "architecture": "unetr", "args": _VIT},
        {"id": "unetr_ag", "architecture": "unetr_ag", "args": _VIT},
        {"id": "unetr_masag", "architecture": "unetr_masag", "args": _VIT},
        {"id": "unet_masag", "architecture": "unet_masag", "args": _CONV},
        {"id": "vertebraformer-base", "architecture": "vertebraformer",
         "args": {**_VF, "identification": False, "lesion_head": False, "domain_modulation": False}},
        {"id": "vertebraformer-id", "architecture": "vertebraformer",
         "args": {**_VF, "identification": True, "lesion_head": False, "domain_modulation": False}},
        {"id": "vertebraformer-id-lesion", "architecture": "vertebraformer",
         "args": {**_VF, "identification": True, "lesion_head": True, "domain_modulation": False}},
        {"id": "vertebraformer", "architecture": "vertebraformer", "args": _VF},
    ],
    "tables": [
        {"title": "Table 1 — segmentation (layout of the improved-SwinUNETR paper's Table 1)",
         "columns": ["mIoU", "mDice", "mAcc"],
         "rows": [["3D CNN", "cnn3d"], ["3D U-Net", "unet3d"], ["3D U-Net + Transformer", "unet3d_transformer"],
                  ["SwinUNETR", "swin_unetr"], ["Improved SwinUNETR (MSF + AA)", "swin_unetr_msf_aa"],
                  ["UNETR", "unetr"], ["UNETR-AG", "unetr_ag"], ["UNETR-MASAG", "unetr_masag"],
                  ["U-Net-MASAG", "unet_masag"], ["VertebraFormer", "vertebraformer"]]},
        {"title": "Table 2 — ablation of the improved SwinUNETR",
         "columns": ["mIoU", "mDice", "mAcc"],
         "rows": [["Improved SwinUNETR (MSF + AA)", "swin_unetr_msf_aa"],
                  ["without multi-scale fusion", "swin_unetr_msf_aa-no_msf"],
                  ["without adaptive attention", "swin_unetr_msf_aa-no_aa"],
                  ["without both (= SwinUNETR)", "swin_unetr"]]},
        {"title": "Table 3 — VertebraFormer ablation",
         "columns": ["mDice", "ID accuracy", "ID head accuracy", "lesion AP"],
         "rows": [["UNETR-like backbone", "vertebraformer-base"], ["+ identification", "vertebraformer-id"],
                  ["+ lesion head", "vertebraformer-id-lesion"], ["+ dynamic modulation", "vertebraformer"]]},
    ],
}

CAVEATS = """\
**What these numbers are.** Every network was trained for the same small number of steps on synthetic phantoms
at {spacing:g} mm with {patch}³-voxel patches and small feature sizes, then evaluated on {n_eval} held-out
phantoms with the inference engine (coarse pass only, at the training spacing). This is a *protocol check*
at phantom scale, not a replication of the papers:

- the budget ({steps} steps) is far below convergence for every architecture, and transformers need more steps
  than CNNs to get going, so the ranking favours the networks that learn fastest, not the best ones;
- at {patch}³ a ViT with 16³ patches sees {tokens} tokens and the Swin bottleneck is one voxel (batch norm
  instead of instance norm, windows of 4), so the attention mechanisms the ablations test have little to work on;
- phantoms are simpler than CT (clean shapes, one scanner "domain"), so the domain modulation of VertebraFormer
  is exercised but cannot help, and identification is easier than on real scans;
- {n_eval} held-out cases give no confidence intervals worth quoting; differences of a few Dice points are noise.

Use these tables to check that every architecture trains, runs in the engine and is scored the same way; use
real data (and a GPU budget) for claims about which architecture is better.
"""


def load_compare_config(path: str | Path | None) -> dict:
    config = copy.deepcopy(DEFAULT_COMPARE)
    if path:
        document = yaml.safe_load(Path(path).read_text()) or {}
        for key, value in document.items():
            if key == "base":
                config["base"].update(value)
            elif key == "eval":
                config["eval"].update(value)
            else:
                config[key] = value
    return config


def run_config(compare: dict, run: dict, data: list[StageData], budget_steps: int, threads: int | None,
               device: str, overrides: list[str]) -> TrainConfig:
    base = dict(compare["base"])
    epoch_steps = max(1, budget_steps // compare["curriculum_epochs_per_budget"])
    base.update(name=f"compare-{run['id']}", architecture=run["architecture"],
                architecture_args=copy.deepcopy(run.get("args", {})), steps=int(budget_steps), device=device,
                data=[vars(d) for d in data], epoch_steps=epoch_steps,
                coarse_spacing=data[0].spacing, fine_spacing=data[0].spacing)
    if threads:
        base["threads"] = threads
    base.update(run.get("config", {}))
    base["warmup_steps"] = min(int(base.get("warmup_steps", 0)), max(1, budget_steps // 5))
    config = TrainConfig.from_dict(base)
    return config.override(overrides) if overrides else config.validate()


def _fingerprint(config: TrainConfig, eval_settings: dict, eval_data: str) -> str:
    document = {"config": config.to_dict(), "eval": eval_settings, "eval_data": str(Path(eval_data).resolve())}
    document["config"].pop("threads", None)
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


def held_out_data(out_dir: Path, data: list[StageData], count: int) -> Path:
    """``count`` fresh phantoms (evaluation seeds) at the first dataset's spacing and field of view."""
    shape = None
    cases = read_manifest(data[0].path)["cases"]
    if cases and isinstance(cases[0].get("phantom"), dict):
        shape = cases[0]["phantom"].get("shape")
    root = out_dir / "heldout"
    make_phantom_dataset(root, count, EVALUATION_SEED_START, data[0].spacing,
                         shape=tuple(shape) if shape else None)
    return root


def evaluate_run(model_dir: Path, eval_cases, settings: dict, device: str, id_patches=None) -> dict:
    """Segmentation, identification and lesion scores of one checkpoint on the held-out cases."""
    table = load_label_table()
    loaded = load_checkpoint(model_dir, device if device != "auto" else "cpu")
    segmenter = Segmenter(loaded, device=device, fast=True, overlap=settings["overlap"],
                          sw_batch_size=settings["sw_batch_size"])
    per_case, lesion_cases, n_correct, n_reference = [], [], 0, 0
    started = time.perf_counter()
    for case in eval_cases:
        result = segmenter(case.ct)
        pred, ref = result.labels.array, case.labels.array
        scores = segmentation_scores(pred, ref, table.values)
        ident = identification_metrics(pred, ref, case.ct.affine, label_values=table.values)
        n_correct += ident["matching"].n_correct
        n_reference += ident["matching"].n_reference
        lesion_cases.append((result.lesions, case.lesions))
        per_case.append({"case": case.case_id, "mIoU": scores["mIoU"], "mDice": scores["mDice"],
                         "mAcc": scores["mAcc"], "id_accuracy": ident["id_accuracy"], "id_rate": ident["id_rate"]})
    seconds = time.perf_counter() - started
    lesions = evaluate_lesions(lesion_cases, iou_threshold=0.0, max_center_distance_mm=settings["lesion_distance_mm"])
    summary = {key: float(np.nanmean([c[key] for c in per_case])) if per_case else float("nan")
               for key in ("mIoU", "mDice", "mAcc")}
    summary["ID accuracy"] = n_correct / n_reference if n_reference else float("nan")
    summary["lesion AP"] = float(lesions["class_agnostic"]["ap"])
    summary["lesion mAP (class-aware)"] = float(lesions["mAP"])
    summary["ID head accuracy"] = _id_head_accuracy(loaded.network, id_patches, device)
    return {"summary": summary, "cases": per_case, "eval_seconds": round(seconds, 1)}


def _id_head_accuracy(network, patches, device: str) -> float:
    """Top-1 accuracy of an identification head on ground-truth boxes of fixed held-out patches (nan without
    a head). This scores the head alone; "ID accuracy" scores the labelmap the engine produces."""
    if patches is None or getattr(network, "id_classifier", None) is None:
        return float("nan")
    dev = torch.device("cuda" if device in ("cuda", "auto") and torch.cuda.is_available() else "cpu")
    correct = total = 0
    network.eval()
    with torch.inference_mode():
        for batch in patches:
            boxes, ids = vertebra_boxes(batch["seg"])
            if len(ids) == 0:
                continue
            out = network(batch["image"].to(dev), boxes=boxes.to(dev))
            correct += int((out["id_logits"].argmax(1).cpu() == ids).sum())
            total += len(ids)
    return correct / total if total else float("nan")


def _format(value) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{100 * value:.1f}"


def format_tables(compare: dict, results: dict, header: str) -> str:
    lines = [header]
    for spec in compare["tables"]:
        lines += ["", f"### {spec['title']}", "", "| model | " + " | ".join(spec["columns"]) + " |",
                  "|---|" + "---:|" * len(spec["columns"])]
        for label, run_id in spec["rows"]:
            result = results.get(run_id)
            if result is None:
                cells = ["not run"] + [""] * (len(spec["columns"]) - 1)
            else:
                cells = [_format(result["summary"].get(column)) for column in spec["columns"]]
            lines.append(f"| {label} (`{run_id}`) | " + " | ".join(cells) + " |")
    lines += ["", "Scores in %, mean over held-out cases (mIoU / mDice / mAcc over the vertebrae present in each "
              "case); ID accuracy: vertebrae named right after Hungarian matching of centroids within 20 mm; "
              "ID head accuracy: the identification head on ground-truth boxes of held-out patches; lesion AP: "
              "class-agnostic, a detection hits a lesion within {d:g} mm; – : not applicable or undefined.".format(
                  d=compare["eval"]["lesion_distance_mm"])]
    lines += ["", "### Runs", "", "| run | architecture | params (M) | train s | steps | final loss | eval s |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for run_id, r in results.items():
        lines.append(f"| `{run_id}` | `{r['architecture']}` | {r['params_m']:.2f} | {r['train_seconds']:.0f} | "
                     f"{r['steps']} | {r['final_loss']:.3f} | {r['eval_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def run_comparison(data: list[StageData], out_dir: str | Path, budget_steps: int, config_path: str | None = None,
                   architectures: str | list[str] | None = None, eval_data: str | None = None, eval_count: int = 4,
                   threads: int | None = None, device: str = "auto", overrides: list[str] = (),
                   log=print) -> dict:
    from .train import Trainer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    compare = load_compare_config(config_path)
    runs = compare["runs"]
    if architectures:
        wanted = architectures.split(",") if isinstance(architectures, str) else list(architectures)
        unknown = sorted(set(wanted) - {r["id"] for r in runs})
        if unknown:
            raise SystemExit(f"unknown run ids {', '.join(unknown)}; known: {', '.join(r['id'] for r in runs)}")
        runs = [r for r in runs if r["id"] in wanted]
    (out_dir / "compare_config.yaml").write_text(yaml.safe_dump(compare, sort_keys=False))
    settings = compare["eval"]
    eval_root = Path(eval_data) if eval_data else held_out_data(out_dir, data, eval_count or settings["count"])
    eval_cases = load_dataset(eval_root)
    spacing, patch = data[0].spacing, int(compare["base"]["patch_size"])
    stage_cases = [to_stage_grid(c, (spacing,) * 3, rng=np.random.default_rng(0)) for c in eval_cases]
    sampler = PatchSampler(stage_cases, patch, np.random.default_rng(12345), augment=False, lesion_fraction=0.0,
                           foreground_fraction=1.0)
    id_patches = [sampler.batch(2) for _ in range(max(1, settings["id_patches"] // 2))]
    log(f"held-out data: {len(eval_cases)} cases from {eval_root}")

    results = {}
    for path in sorted((out_dir / "runs").glob("*/result.json")):
        result = json.loads(path.read_text())
        results[result["id"]] = result
    total_started = time.time()
    for run in runs:
        run_dir = out_dir / "runs" / run["id"]
        config = run_config(compare, run, data, budget_steps, threads, device, list(overrides))
        fingerprint = _fingerprint(config, settings, eval_root)
        result_path = run_dir / "result.json"
        if result_path.is_file():
            previous = json.loads(result_path.read_text())
            if previous.get("fingerprint") == fingerprint:
                log(f"{run['id']}: done before, skipped")
                continue
            raise SystemExit(f"{run_dir} holds a result made with other settings; remove it or use another -o")
        log(f"{run['id']}: training {config.architecture} for {config.steps} steps")
        started = time.time()
        trainer = Trainer(config, run_dir, log=log)
        try:
            trainer.load_data()
            trainer.try_resume()
            trainer.fit()
            train_seconds = time.time() - started
            card = trainer.model_card("spineseg-train compare", train_seconds,
                                      ", ".join(f"{d.path} at {d.spacing} mm" for d in data))
            trainer.export(run_dir / "model", card)
            params = sum(p.numel() for p in trainer.model.parameters()) / 1e6
            losses = [h["loss"] for h in trainer.history[-20:] if "loss" in h]
        finally:
            trainer.close()
        evaluation = evaluate_run(run_dir / "model", eval_cases, settings, device, id_patches)
        result = {"id": run["id"], "architecture": run["architecture"], "args": run.get("args", {}),
                  "fingerprint": fingerprint, "steps": config.steps, "train_seconds": round(train_seconds, 1),
                  "params_m": params, "final_loss": float(np.mean(losses)) if losses else float("nan"),
                  **evaluation}
        result_path.write_text(json.dumps(result, indent=2, default=float) + "\n")
        results[run["id"]] = result
        log(f"{run['id']}: mDice {_format(evaluation['summary']['mDice'])} %, "
            f"trained in {train_seconds:.0f} s, evaluated in {evaluation['eval_seconds']:.0f} s")
    tokens = (patch // 16) ** 3
    header = ("# Architecture comparison on phantoms\n\n"
              f"Training data: {', '.join(f'{d.path} at {d.spacing:g} mm' for d in data)}; budget "
              f"{budget_steps} steps × batch {compare['base']['batch_size']} per run; held-out: {eval_root} "
              f"({len(eval_cases)} cases). Command: `spineseg-train compare` (protocol: docs/comparison.md).\n\n"
              + CAVEATS.format(spacing=spacing, patch=patch, n_eval=len(eval_cases), steps=budget_steps,
                               tokens=tokens))
    text = format_tables(compare, results, header)
    (out_dir / "comparison.md").write_text(text)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    log(text)
    log(f"comparison written to {out_dir / 'comparison.md'} ({time.time() - total_started:.0f} s this call)")
    return results
