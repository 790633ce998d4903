"""``spineseg``: the command line host over the core.

    spineseg phantom -o DIR --seed N [--region R] [--shape X,Y,Z] [--spacing x,y,z] [--lesions K] ...
    spineseg segment INPUT -o DIR [--model PATH] [--device auto|cpu|cuda] [--fast] [--json-progress]

Every command writes its output folder atomically: on an error or Ctrl-C nothing is left behind.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from .errors import Cancelled, SpineSegError
from .progress import CancelToken


def _triple(kind):
    def parse(text: str):
        parts = [p for p in text.replace("x", ",").split(",") if p]
        if len(parts) != 3:
            raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}")
        return tuple(kind(p) for p in parts)

    return parse


class Reporter:
    """Progress on a terminal (a tqdm bar) or as JSON lines for programs (``--json-progress``)."""

    def __init__(self, json_lines: bool):
        self.json_lines = json_lines
        self.bar = None
        if not json_lines:
            from tqdm import tqdm

            self.bar = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {elapsed}<{remaining}", file=sys.stderr)

    def __call__(self, fraction: float, stage: str) -> None:
        if self.json_lines:
            self.emit({"event": "progress", "fraction": round(fraction, 4), "stage": stage})
        else:
            self.bar.set_description(stage[:28].ljust(28))
            self.bar.n = round(100 * fraction, 1)
            self.bar.refresh()

    def emit(self, event: dict) -> None:
        print(json.dumps(event), flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _cmd_phantom(args, reporter, cancel) -> Path:
    from .phantom import PhantomConfig, generate_phantom, write_phantom

    config = PhantomConfig(seed=args.seed, region=args.region, shape=args.shape, spacing=args.spacing,
                           orientation=args.orientation, lesions=args.lesions, variant=args.variant,
                           scoliosis=args.scoliosis, metal=args.metal)
    phantom = generate_phantom(config, progress=reporter)
    cancel.raise_if_cancelled()
    return write_phantom(phantom, args.output)


def _cmd_segment(args, reporter, cancel) -> Path:
    from .inference import Segmenter
    from .io import read_volume
    from .results import save_results

    output = Path(args.output).absolute()
    source = Path(args.input).absolute()
    if output == source or source in output.parents:
        raise SpineSegError(f"the output folder {output} must not be the input or inside it")
    reporter(0.0, "reading the CT")
    ct = read_volume(args.input)
    segmenter = Segmenter(args.model, device=args.device, fast=args.fast)
    result = segmenter(ct, progress=lambda f, s: reporter(0.02 + 0.9 * f, s), cancel=cancel)
    reporter(0.93, "writing results")
    save_results(result, ct, output, cancel=cancel)
    reporter(1.0, "done")
    return output


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spineseg", description="Spine CT segmentation (research use only, "
                                     "not a medical device).")
    commands = parser.add_subparsers(dest="command", required=True)

    phantom = commands.add_parser("phantom", help="generate a synthetic spine CT with labels and lesions")
    phantom.add_argument("-o", "--output", required=True, help="output folder")
    phantom.add_argument("--seed", type=int, default=0)
    phantom.add_argument("--region", default="whole",
                         choices=["whole", "cervical", "thoracic", "lumbar", "thoracolumbar"])
    phantom.add_argument("--shape", type=_triple(int), default=None, help="voxels X,Y,Z (default: fits the region)")
    phantom.add_argument("--spacing", type=_triple(float), default=(1.25, 1.25, 1.25), help="mm x,y,z")
    phantom.add_argument("--orientation", default="RAS", choices=["RAS", "LPS", "oblique"])
    phantom.add_argument("--lesions", type=int, default=2, help="number of lesions")
    phantom.add_argument("--variant", default="none", choices=["none", "T13", "L6", "random"])
    phantom.add_argument("--scoliosis", action=argparse.BooleanOptionalAction, default=None)
    phantom.add_argument("--metal", action="store_true", help="add pedicle screws with streak artefacts")
    phantom.add_argument("--json-progress", action="store_true", help="print JSON progress lines")
    phantom.set_defaults(run=_cmd_phantom)

    segment = commands.add_parser("segment", help="segment a CT: vertebrae, lesion heatmap, lesions, report")
    segment.add_argument("input", help="CT as NIfTI (.nii/.nii.gz), NRRD (.nrrd) or a DICOM series folder")
    segment.add_argument("-o", "--output", required=True, help="output folder (created atomically)")
    segment.add_argument("--model", default=None, help="checkpoint folder or .zip (default: the bundled model)")
    segment.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    segment.add_argument("--fast", action="store_true", help="coarse pass only (about 3 mm)")
    segment.add_argument("--json-progress", action="store_true", help="print JSON progress lines (for programs)")
    segment.set_defaults(run=_cmd_segment)

    _add_host_commands(commands)
    return parser


def _add_host_commands(commands) -> None:
    """Commands of the other hosts: offscreen pictures (slicer-core) and the browser front end (trame-slicer)."""
    from . import cli_hosts, render

    render.add_render_command(commands)
    cli_hosts.add_commands(commands)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    json_lines = getattr(args, "json_progress", False)
    reporter = Reporter(json_lines)
    cancel = CancelToken()
    previous = signal.signal(signal.SIGTERM, lambda *_: cancel.cancel())
    try:
        output = args.run(args, reporter, cancel)
    except KeyboardInterrupt:
        return _fail(reporter, "cancelled by the user", 130)
    except Cancelled as error:
        return _fail(reporter, str(error), 130)
    except (SpineSegError, FileExistsError) as error:
        return _fail(reporter, str(error), 2)
    finally:
        signal.signal(signal.SIGTERM, previous)
        reporter.close()
    if output is not None:
        if json_lines:
            reporter.emit({"event": "done", "output": str(Path(output).absolute())})
        else:
            print(f"results written to {output}")
    return 0


def _fail(reporter: Reporter, message: str, code: int) -> int:
    if reporter.json_lines:
        reporter.emit({"event": "error", "message": message})
    else:
        print(f"spineseg: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
