"""``spineseg-train``: make phantoms, train, evaluate, compare architectures (research use; not a medical device).

    spineseg-train make-phantoms -o DIR --count N --seed-start S --spacing 1.5 [--shape I J K]
    spineseg-train train --config cfg.yaml -o RUN_DIR [--steps N] [--set key=value ...] [--export MODEL_DIR]
    torchrun --nproc-per-node 2 -m spineseg_train.cli train --config cfg.yaml -o RUN_DIR   (data parallel)
    spineseg-train evaluate --model MODEL [--count 10 | --data DATASET] [--json OUT]
    spineseg-train evaluate --model M1 [--model M2 ...] --data DATASET --report DIR [--baseline M1]
    spineseg-train convert SOURCE -o DATASET [--layout verse|ctspine1k|totalsegmentator|generic|spineseg]
    spineseg-train curate --data DATASET -o REPORT_DIR     duplicates, patient-level stratified splits
    spineseg-train protocol lodo|robustness|tta|domain-codes ...   evaluation protocols (docs/evaluation.md)
    spineseg-train level-sizes --model MODEL --data DATASET [...]   the training data's vertebra sizes, into the card
    spineseg-train models [--arch ID ...]            parameters, GFLOPs, latency of every architecture
    spineseg-train compare --data DATASET:SPACING --budget-steps N -o DIR   the papers' comparison tables
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path


def _cmd_make_phantoms(args) -> int:
    from tqdm import tqdm

    from .phantoms import make_phantom_dataset

    bar = tqdm(total=args.count, desc="phantoms", file=sys.stderr)
    make_phantom_dataset(args.output, args.count, args.seed_start, args.spacing, args.region,
                         progress=lambda f, s: bar.update(round(f * args.count) - bar.n),
                         shape=tuple(args.shape) if args.shape else None, domain=args.domain)
    bar.close()
    print(f"dataset written to {args.output}")
    return 0


def _parse_data(items: list[str]):
    from .config import StageData

    stages = []
    for item in items:
        path, sep, spacing = item.rpartition(":")
        if not sep or not path:
            raise SystemExit(f"--data {item!r}: give DATASET:SPACING_MM")
        stages.append(StageData(path=path, spacing=float(spacing)))
    return stages


def training_config(args):
    """The configuration of ``train``: the YAML file, then the flags, then ``--set`` overrides."""
    from .config import TrainConfig

    config = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    for key in ("steps", "lr", "batch_size", "patch_size", "name", "threads", "device"):
        value = getattr(args, key, None)
        if value is not None:
            setattr(config, key, value)
    if args.data:
        config.data = _parse_data(args.data)
    if args.set:
        config = config.override(args.set)
    return config.validate()


def _cmd_train(args) -> int:
    from .train import Trainer

    config = training_config(args)
    trainer = Trainer(config, args.output)
    try:
        if trainer.dist.is_main:
            config.to_yaml(Path(args.output) / "config.yaml")
        trainer.load_data()
        trainer.try_resume()
        started = time.time()
        trainer.fit()
        if args.export and trainer.dist.is_main:
            command = "spineseg-train " + " ".join(shlex.quote(a) for a in sys.argv[1:])
            described = ", ".join(f"{d.path} at {d.spacing} mm" for d in config.data)
            card = trainer.model_card(command, time.time() - started + args.previous_seconds, described)
            trainer.export(args.export, card)
            print(f"model exported to {args.export}")
        trainer.dist.barrier()
    finally:
        trainer.close()
    return 0


def _cmd_models(args) -> int:
    from .model_table import format_model_table, model_table

    rows = model_table(args.arch or None, flops_size=args.flops_size, latency_size=args.latency_size,
                       latency_runs=args.latency_runs, gpu=False if args.no_gpu else None,
                       progress=lambda arch: print(f"measuring {arch} ...", file=sys.stderr))
    text = format_model_table(rows)
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    return 0


def _cmd_compare(args) -> int:
    from .compare import run_comparison

    run_comparison(data=_parse_data(args.data), out_dir=args.output, budget_steps=args.budget_steps,
                   config_path=args.config, architectures=args.architectures, eval_data=args.eval_data,
                   eval_count=args.eval_count, threads=args.threads, device=args.device, overrides=args.set or [])
    return 0


def _cmd_evaluate(args) -> int:
    from .evaluate import evaluate

    models = args.model
    if args.report:
        return _evaluate_report(args)
    if len(models) > 1 or args.baseline:
        raise SystemExit("several models, or a baseline, need --report DIR (the comparison is a report)")
    args.model = models[0]
    if args.update_card and args.lesion_threshold is not None:
        raise SystemExit("--update-card records the model as its card stands; run it without --lesion-threshold "
                         "(or set lesion_threshold in the card first)")
    report = evaluate(args.model, args.count, args.seed_start, args.data, args.device, args.fast,
                      args.lesion_threshold)
    summary = report["summary"]
    print(json.dumps(summary, indent=2))
    if args.json:
        from SpineSegLib.io import write_json

        write_json(args.json, report)
    if args.update_card:
        _update_card(args.model, summary, report)
    return 0


def _evaluate_report(args) -> int:
    from SpineSegLib.io import write_json

    from .evaluate import evaluate_report

    if args.update_card or args.lesion_threshold is not None:
        raise SystemExit("--update-card and --lesion-threshold belong to the plain evaluation; run it without --report")
    document = evaluate_report(args.model, args.report, args.data, count=args.count, seed_start=args.seed_start,
                               layout=args.layout, split=args.split, limit=args.limit, baseline=args.baseline,
                               n_resamples=args.bootstrap, seed=args.bootstrap_seed, device=args.device,
                               fast=args.fast, surface=not args.no_surface)
    if args.json:
        write_json(args.json, document)
    for name, summary in document["summaries"].items():
        dice = summary["mean_vertebra_dice"]
        print(f"{name}: vertebra Dice {dice['estimate']:.4f} [{dice['low']:.4f}, {dice['high']:.4f}] "
              f"({summary['cases']} cases, {summary['patients']} patients)")
    print(f"report written to {args.report} (report.md, report.json, cases.csv, figures)")
    return 0


def _reader_options(args):
    from .datasets import ReadOptions, mapping_from_json

    return ReadOptions(domain=args.domain, mapping=mapping_from_json(args.mapping) if args.mapping else None,
                       unknown=args.unknown_labels, patient_regex=args.patient_regex, grades=args.grades)


def _cmd_convert(args) -> int:
    from .datasets import convert_dataset

    report = convert_dataset(args.source, args.output, args.layout, _reader_options(args), args.limit)
    print(f"{report['layout']}: {len(report['converted'])} converted, {len(report['skipped'])} already there, "
          f"{len(report['failed'])} failed; report in {Path(args.output) / 'conversion_report.json'}")
    for failure in report["failed"]:
        print(f"  {failure['case']}: {failure['error']}", file=sys.stderr)
    return 1 if report["failed"] else 0


def _cmd_curate(args) -> int:
    from .curation import curate

    names = ("train", "val", "test")
    report = curate(args.data, args.output, layout=args.layout, fractions=dict(zip(names, args.fractions)),
                    seed=args.seed, max_distance=args.max_distance, in_manifest=args.in_manifest)
    counts = report["counts"]["total"]
    print(f"{len(report['cases'])} cases in {len(report['groups'])} groups, {len(report['duplicates'])} "
          f"near-duplicate pair(s); splits " + ", ".join(f"{n} {counts.get(n, 0)}" for n in names))
    print(f"splits: {report['splits_file']}; report: {Path(args.output) / 'curation.md'}")
    return 0


def _protocol_cases(args):
    from .protocols.cases import evaluation_cases

    cases = evaluation_cases(args.data, args.layout, args.split, args.limit)
    return cases, f"{args.data}" + (f" (split {args.split})" if args.split else "") + f", {len(cases)} cases"


def _protocol_common(args) -> dict:
    return {"device": args.device, "fast": args.fast, "n_resamples": args.bootstrap, "seed": args.seed,
            "surface": not args.no_surface}


def _cmd_protocol_robustness(args) -> int:
    from .protocols.robustness import DEFAULT_PERTURBATIONS, robustness

    cases, described = _protocol_cases(args)
    robustness(args.model, cases, args.report, args.perturb or DEFAULT_PERTURBATIONS, data_description=described,
               **_protocol_common(args))
    print(f"report written to {args.report}")
    return 0


def _cmd_protocol_tta(args) -> int:
    from .protocols.cases import evaluation_cases
    from .protocols.tta import intensity_statistics, read_statistics, tta

    stats = read_statistics(args.stats) if args.stats else None
    if args.stats_from:
        stats = intensity_statistics(evaluation_cases(args.stats_from, args.layout))
    if args.record_stats:
        if stats is None:
            raise SystemExit("--record-stats needs --stats or --stats-from")
        _record_intensity_stats(args.model, stats, args.stats_from or args.stats)
    cases, described = _protocol_cases(args)
    tta(args.model, cases, args.report, args.methods, stats=stats, tent_steps=args.tent_steps, tent_lr=args.tent_lr,
        tent_windows=args.tent_windows, data_description=described, **_protocol_common(args))
    print(f"report written to {args.report}")
    return 0


def _record_intensity_stats(model: str, stats: dict, source: str) -> None:
    """Write the training intensity statistics into the card (``preprocessing.intensity_stats``), for AdaIN."""
    from SpineSegLib.checkpoint import CARD_FILE
    from SpineSegLib.io import write_json

    card_path = Path(model) / CARD_FILE
    card = json.loads(card_path.read_text())
    card["preprocessing"]["intensity_stats"] = {**stats, "source": str(source)}
    write_json(card_path, card)
    print(f"intensity statistics recorded in {card_path}")


def _cmd_protocol_domain_codes(args) -> int:
    from .protocols.domain_codes import domain_codes

    cases, described = _protocol_cases(args)
    domain_codes(args.model, cases, args.report, args.wrong, data_description=described, **_protocol_common(args))
    print(f"report written to {args.report}")
    return 0


def _cmd_protocol_lodo(args) -> int:
    from .protocols.lodo import lodo

    config = training_config(args)
    lodo(config, args.output, test_data=args.test_data, test_split=args.test_split, train_split=args.train_split,
         held_out_only=args.held_out_only, domains=args.domains, **_protocol_common(args))
    print(f"report written to {Path(args.output) / 'report'}")
    return 0


def _add_protocol_commands(commands) -> None:
    p = commands.add_parser("protocol", help="evaluation protocols: lodo, robustness, tta, domain-codes")
    protocols = p.add_subparsers(dest="protocol", required=True)

    def common(q, data_required=True):
        q.add_argument("--device", default="auto")
        q.add_argument("--fast", action="store_true", help="coarse pass only")
        q.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap replicates (default 10000)")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--no-surface", action="store_true", help="skip HD95 / ASSD")
        if data_required:
            q.add_argument("--data", required=True, help="test dataset (any supported layout)")
            q.add_argument("--layout", default="auto")
            q.add_argument("--split", help="only this curated split (train, val, test)")
            q.add_argument("--limit", type=int, help="only the first N cases")
            q.add_argument("--model", required=True)
            q.add_argument("--report", "-o", required=True, help="report folder")

    q = protocols.add_parser("robustness", help="HU scaling, noise, thick slices, metal; results by region")
    common(q)
    q.add_argument("--perturb", action="append", metavar="KIND[:VALUE]",
                   help="hu_scale:F, noise:SIGMA_HU, thick:MM, metal (repeatable; default: the standard set)")
    q.set_defaults(run=_cmd_protocol_robustness)

    q = protocols.add_parser("tta", help="test-time adaptation: none, AdaIN, TENT")
    common(q)
    q.add_argument("--methods", nargs="+", default=["none", "adain", "tent"], choices=["none", "adain", "tent"])
    q.add_argument("--stats", help="JSON with the training intensity statistics {mean, std} (AdaIN)")
    q.add_argument("--stats-from", help="compute the training intensity statistics from this dataset")
    q.add_argument("--record-stats", action="store_true",
                   help="also write those statistics into the model card (preprocessing.intensity_stats)")
    q.add_argument("--tent-steps", type=int, default=3)
    q.add_argument("--tent-lr", type=float, default=1e-3)
    q.add_argument("--tent-windows", type=int, default=1, help="windows per TENT step")
    q.set_defaults(run=_cmd_protocol_tta)

    q = protocols.add_parser("domain-codes", help="Vertebraformer with wrong, random or swapped domain codes")
    common(q)
    q.add_argument("--wrong", type=float, nargs="+", default=[0.1, 0.2, 0.3], help="fractions of wrong codes")
    q.set_defaults(run=_cmd_protocol_domain_codes)

    q = protocols.add_parser("lodo", help="leave one domain out: train without each domain, test on it")
    common(q, data_required=False)
    q.add_argument("-o", "--output", required=True, help="protocol folder (resumable)")
    q.add_argument("--config", help="training YAML")
    q.add_argument("--data", nargs="*", help="training DATASET:SPACING_MM (overrides the config's data)")
    q.add_argument("--steps", type=int)
    q.add_argument("--threads", type=int)
    q.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a training setting")
    q.add_argument("--test-data", help="test dataset (default: the first training dataset)")
    q.add_argument("--test-split", help="curated split of the test data to test on")
    q.add_argument("--train-split", help="curated split of the training data to train on")
    q.add_argument("--held-out-only", action="store_true", help="test each fold on its held-out domain only")
    q.add_argument("--domains", nargs="+", help="folds to run (default: every domain)")
    q.set_defaults(run=_cmd_protocol_lodo)


def _cmd_level_sizes(args) -> int:
    from .level_sizes import record_level_sizes

    profile = record_level_sizes(args.model, args.data)
    print(f"level sizes of {len(profile['volume_mm3'])} levels from {profile['cases']} cases written into "
          f"{args.model} (case scale spread {profile['scale_sd']:.3f} in log volume)")
    return 0


def _cmd_fit_surface(args) -> int:
    from .surface_fit import fit_surface

    try:
        document = fit_surface(args.model, args.count, args.seed_start, args.data, args.device, args.fast,
                               args.hidden, update_card=not args.dry_run)
    except ValueError as error:
        raise SystemExit(f"fit-surface: {error}") from None
    print(json.dumps(document["fitted_on"], indent=2))
    if not args.dry_run:
        print(f"surface refinement written into {args.model} (postprocessing.surface_refinement)")
    return 0


def _cmd_calibrate_lesions(args) -> int:
    from .lesion_calibration import calibrate_lesions

    try:
        document = calibrate_lesions(args.model, args.count, args.seed_start, args.data, args.device, args.fast,
                                     args.fp_per_scan, update_card=not args.dry_run)
    except ValueError as error:
        raise SystemExit(f"calibrate-lesions: {error}") from None
    print(json.dumps(document, indent=2))
    if not args.dry_run:
        print(f"lesion calibration written into {args.model} (postprocessing.lesion_calibration)")
    return 0


def _update_card(model: str, summary: dict, report: dict) -> None:
    from SpineSegLib.checkpoint import CARD_FILE
    from SpineSegLib.io import write_json

    card_path = Path(model) / CARD_FILE
    card = json.loads(card_path.read_text())
    card.setdefault("metrics", {})[f"phantom_{report['mode']}"] = {**summary, "data": report["data"]}
    card.setdefault("timing", {})["cpu_seconds_" + report["mode"]] = round(summary["mean_seconds"], 1)
    write_json(card_path, card)


def _tuning_arguments(parser, what: str, fast_help: str) -> None:
    """The options of a command that fits part of a model's card on tuning cases."""
    parser.add_argument("--model", required=True, help=f"model folder whose card gets the {what}")
    parser.add_argument("--count", type=int, default=16, help="tuning phantoms (default 16)")
    parser.add_argument("--seed-start", type=int, default=800_000,
                        help="first tuning phantom seed (default 800000: apart from training and evaluation seeds)")
    parser.add_argument("--data", help="a dataset folder of tuning cases instead of phantoms")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--fast", action="store_true", help=fast_help)
    parser.add_argument("--dry-run", action="store_true", help=f"fit the {what} and print it, leave the card as it is")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spineseg-train", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("make-phantoms", help="generate a phantom dataset")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--seed-start", type=int, default=0)
    p.add_argument("--spacing", type=float, default=1.5)
    p.add_argument("--region", default=None, help="fixed region (default: a mix)")
    p.add_argument("--shape", type=int, nargs=3, metavar=("I", "J", "K"),
                   help="fixed field of view in voxels (default: the region plus margins)")
    p.add_argument("--domain", default="phantom", help="domain name recorded in the manifest (default phantom)")
    p.set_defaults(run=_cmd_make_phantoms)

    t = commands.add_parser("train", help="train (resumes from RUN_DIR/resume.pt when present)")
    t.add_argument("-o", "--output", required=True, help="run folder (resume state, logs)")
    t.add_argument("--config", help="YAML configuration")
    t.add_argument("--data", nargs="*", help="DATASET:SPACING_MM (overrides the config's data)")
    t.add_argument("--steps", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--patch-size", type=int)
    t.add_argument("--threads", type=int)
    t.add_argument("--device")
    t.add_argument("--name")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any setting (repeatable; dotted keys for nested ones: augment.elastic=true)")
    t.add_argument("--export", help="write the trained model as a checkpoint folder here")
    t.add_argument("--previous-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    t.set_defaults(run=_cmd_train)

    e = commands.add_parser("evaluate", help="Dice, identification and lesion recall on fresh phantoms or a "
                                             "dataset; --report DIR for the full report of one or more models")
    e.add_argument("--model", required=True, action="append", help="checkpoint (repeat for several models)")
    e.add_argument("--count", type=int, default=10)
    e.add_argument("--seed-start", type=int, default=900_000)
    e.add_argument("--data", help="a dataset folder instead of phantoms")
    e.add_argument("--device", default="auto")
    e.add_argument("--fast", action="store_true")
    e.add_argument("--json", help="write the full report here")
    e.add_argument("--update-card", action="store_true", help="record the metrics in the model card")
    e.add_argument("--lesion-threshold", type=float,
                   help="detection threshold instead of the card's (on tuning cases, a low one finds the threshold "
                        "for at most one false positive per scan: lesion_score_at_1fp)")
    e.add_argument("--report", help="write the report folder (JSON, Markdown, per-case CSV, figures) here")
    e.add_argument("--baseline", help="with several models: the one the others are tested against")
    e.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap replicates of the intervals (10000)")
    e.add_argument("--bootstrap-seed", type=int, default=0)
    e.add_argument("--layout", default="auto", help="layout of --data (auto, spineseg, verse, ctspine1k, ...)")
    e.add_argument("--split", help="with --report: only this curated split of --data")
    e.add_argument("--limit", type=int, help="with --report: only the first N cases of --data")
    e.add_argument("--no-surface", action="store_true", help="with --report: skip HD95 / ASSD")
    e.set_defaults(run=_cmd_evaluate)

    v = commands.add_parser("convert", help="convert a public dataset layout into SpineSeg's dataset format")
    v.add_argument("source")
    v.add_argument("-o", "--output", required=True, help="SpineSeg dataset folder (created or extended)")
    v.add_argument("--layout", default="auto",
                   choices=["auto", "spineseg", "verse", "ctspine1k", "totalsegmentator", "generic"])
    v.add_argument("--domain", help="domain name for every case (default: the layout's)")
    v.add_argument("--mapping", help="label mapping JSON (docs/data-contract.md)")
    v.add_argument("--grades", help="fracture grades CSV/JSON (VerSe): fractures at the vertebra centroids")
    v.add_argument("--unknown-labels", default="error", choices=["error", "background"],
                   help="label values the mapping does not know: fail the case (default) or set them to 0")
    v.add_argument("--patient-regex", help="patient id = first group of this regex on the case id")
    v.add_argument("--limit", type=int, help="only the first N cases")
    v.set_defaults(run=_cmd_convert)

    u = commands.add_parser("curate", help="near-duplicates, DICOM groups, patient-level stratified splits")
    u.add_argument("--data", required=True, help="dataset folder (SpineSeg format, or --layout)")
    u.add_argument("-o", "--output", required=True, help="report folder (curation.json, curation.md)")
    u.add_argument("--layout", default="auto")
    u.add_argument("--fractions", type=float, nargs=3, default=[0.6, 0.2, 0.2], metavar=("TRAIN", "VAL", "TEST"))
    u.add_argument("--seed", type=int, default=0)
    u.add_argument("--max-distance", type=int, default=5, help="near-duplicate: Hamming distance below this")
    u.add_argument("--in-manifest", action="store_true", help="also write each case's split into the manifest")
    u.set_defaults(run=_cmd_curate)

    _add_protocol_commands(commands)

    m = commands.add_parser("models", help="model table: parameters, GFLOPs, CPU latency (GPU columns with CUDA)")
    m.add_argument("--arch", nargs="*", help="architecture ids (default: all)")
    m.add_argument("--flops-size", type=int, default=128, help="input edge for the FLOP count (default 128)")
    m.add_argument("--latency-size", type=int, default=96, help="input edge for CPU latency (default 96)")
    m.add_argument("--latency-runs", type=int, default=3)
    m.add_argument("--no-gpu", action="store_true", help="skip the GPU columns even with CUDA")
    m.add_argument("-o", "--output", help="also write the Markdown table here")
    m.set_defaults(run=_cmd_models)

    c = commands.add_parser("compare", help="train every architecture on the same phantoms and budget; "
                                            "write the papers' comparison tables (docs/comparison.md)")
    c.add_argument("--data", nargs="+", required=True, help="DATASET:SPACING_MM training data")
    c.add_argument("--budget-steps", type=int, required=True, help="training steps per architecture")
    c.add_argument("-o", "--output", required=True, help="comparison folder (resumable: finished runs are kept)")
    c.add_argument("--config", help="comparison YAML (default: the built-in one, see docs/comparison.md)")
    c.add_argument("--architectures", help="comma-separated run ids to train (default: every run)")
    c.add_argument("--eval-data", help="held-out dataset (default: --eval-count fresh phantoms)")
    c.add_argument("--eval-count", type=int, default=4, help="held-out phantoms to generate (default 4)")
    c.add_argument("--threads", type=int)
    c.add_argument("--device", default="auto")
    c.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting of every run")
    c.set_defaults(run=_cmd_compare)

    s = commands.add_parser("level-sizes", help="measure the vertebra size profile of the training data into a "
                            "counting model's card (postprocessing.level_sizes)")
    s.add_argument("--model", required=True, help="model folder whose card gets the profile")
    s.add_argument("--data", required=True, nargs="+", help="the datasets the model was trained on")
    s.set_defaults(run=_cmd_level_sizes)

    k = commands.add_parser("calibrate-lesions", help="fit the model's lesion scores per class on tuning cases, and "
                            "the threshold for at most --fp-per-scan false positives, into its card "
                            "(postprocessing.lesion_calibration)")
    _tuning_arguments(k, "calibration", "calibrate the coarse pass's heatmap (fast mode)")
    k.add_argument("--fp-per-scan", type=float, default=1.0, help="false positives per scan the threshold allows")
    k.set_defaults(run=_cmd_calibrate_lesions)

    f = commands.add_parser("fit-surface", help="fit how the vertebrae's surfaces are refined from the CT on the "
                            "input grid, on tuning cases, into the model's card (postprocessing.surface_refinement)")
    _tuning_arguments(f, "refinement", "fit the coarse pass's refinement (fast mode)")
    f.add_argument("--hidden", type=int, default=16, help="hidden units of the perceptron (default 16)")
    f.set_defaults(run=_cmd_fit_surface)

    try:  # fine-tuning lives in its own module (corrections workflow)
        from .finetune import add_finetune_command
    except ImportError:
        pass
    else:
        add_finetune_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
