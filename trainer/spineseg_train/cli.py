"""``spineseg-train``: make phantoms, train, evaluate, compare architectures (research use; not a medical device).

    spineseg-train make-phantoms -o DIR --count N --seed-start S --spacing 1.5 [--shape I J K]
    spineseg-train train --config cfg.yaml -o RUN_DIR [--steps N] [--set key=value ...] [--export MODEL_DIR]
    torchrun --nproc-per-node 2 -m spineseg_train.cli train --config cfg.yaml -o RUN_DIR   (data parallel)
    spineseg-train evaluate --model MODEL [--count 10 | --data DATASET] [--json OUT]
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

    report = evaluate(args.model, args.count, args.seed_start, args.data, args.device, args.fast)
    summary = report["summary"]
    print(json.dumps(summary, indent=2))
    if args.json:
        from SpineSegLib.io import write_json

        write_json(args.json, report)
    if args.update_card:
        _update_card(args.model, summary, report)
    return 0


def _update_card(model: str, summary: dict, report: dict) -> None:
    from SpineSegLib.checkpoint import CARD_FILE
    from SpineSegLib.io import write_json

    card_path = Path(model) / CARD_FILE
    card = json.loads(card_path.read_text())
    card.setdefault("metrics", {})[f"phantom_{report['mode']}"] = {**summary, "data": report["data"]}
    card.setdefault("timing", {})["cpu_seconds_" + report["mode"]] = round(summary["mean_seconds"], 1)
    write_json(card_path, card)


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

    e = commands.add_parser("evaluate", help="Dice, identification and lesion recall on fresh phantoms")
    e.add_argument("--model", required=True)
    e.add_argument("--count", type=int, default=10)
    e.add_argument("--seed-start", type=int, default=900_000)
    e.add_argument("--data", help="a dataset folder instead of phantoms")
    e.add_argument("--device", default="auto")
    e.add_argument("--fast", action="store_true")
    e.add_argument("--json", help="write the full report here")
    e.add_argument("--update-card", action="store_true", help="record the metrics in the model card")
    e.set_defaults(run=_cmd_evaluate)

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
