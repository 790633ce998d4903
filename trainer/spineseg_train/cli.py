"""``spineseg-train``: make phantom data, train, evaluate (research use; not a medical device).

    spineseg-train make-phantoms -o DIR --count N --seed-start S --spacing 1.5
    spineseg-train train --config cfg.yaml -o RUN_DIR [--steps N] [--export MODEL_DIR]
    spineseg-train evaluate --model MODEL [--count 10 | --data DATASET] [--json OUT]
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
                         progress=lambda f, s: bar.update(round(f * args.count) - bar.n))
    bar.close()
    print(f"dataset written to {args.output}")
    return 0


def _cmd_train(args) -> int:
    from .config import StageData, TrainConfig
    from .train import Trainer

    config = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    for key in ("steps", "lr", "batch_size", "patch_size", "name", "threads", "device"):
        value = getattr(args, key)
        if value is not None:
            setattr(config, key, value)
    if args.data:
        config.data = [StageData(path=p, spacing=float(s)) for p, s in (d.rsplit(":", 1) for d in args.data)]
    trainer = Trainer(config, args.output)
    trainer.load_data()
    trainer.try_resume()
    started = time.time()
    trainer.fit()
    if args.export:
        command = "spineseg-train " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        described = ", ".join(f"{d.path} at {d.spacing} mm" for d in config.data)
        card = trainer.model_card(command, time.time() - started + args.previous_seconds, described)
        trainer.export(args.export, card)
        print(f"model exported to {args.export}")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
