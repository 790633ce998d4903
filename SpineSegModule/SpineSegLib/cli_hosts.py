"""Commands of the other hosts on the ``spineseg`` command line (``cli.build_parser`` adds them when present).

    spineseg web  [--host 127.0.0.1] [--port 8080] [--models DIR] [--datasets DIR] [--default-model NAME] ...
    spineseg demo [--host 127.0.0.1] [--port 8080] ...   (every new session starts with a phantom loaded)

Both serve SpineSeg in the browser (trame-slicer); they need ``pip install 'trame-slicer[standalone]'``.
"""

from __future__ import annotations

import argparse
import sys


def add_commands(subparsers) -> None:
    for name, help_text, demo in (
        ("web", "SpineSeg in the browser: load a CT, segment, correct, save", False),
        ("demo", "the web front end with a phantom already loaded in every session", True),
    ):
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        _web_arguments(parser)
        parser.set_defaults(run=_run_web, demo=demo, json_progress=True)  # no progress bar: a server


def _web_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--models", default=None, help="folder of checkpoints offered besides the bundled model")
    parser.add_argument("--datasets", default="spineseg-datasets",
                        help="folder where corrected cases are saved as training datasets")
    parser.add_argument("--default-model", default=None, help="model chosen at first (a name in --models)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--max-sessions", type=int, default=8, help="browser sessions served at once")
    parser.add_argument("--session-timeout", type=int, default=600,
                        help="seconds a session lives without a connected browser")
    parser.add_argument("--python", default=None, help="the Python that runs segmentations (default: this one)")


def _run_web(args, reporter, cancel):  # noqa: ARG001 - the CLI's command signature
    try:
        from .web.controller import WebConfig
        from .web.launcher import serve
    except ImportError as error:
        print(f"spineseg {args.command}: the web front end needs trame-slicer "
              f"(pip install 'trame-slicer[standalone]'): {error}", file=sys.stderr)
        raise SystemExit(2) from error
    config = WebConfig(models_dir=args.models, datasets_dir=args.datasets, default_model=args.default_model,
                       device=args.device, phantom_on_start=args.demo, python=args.python)

    def ready(url: str) -> None:
        what = "SpineSeg demo (a phantom is loaded in every new session)" if args.demo else "SpineSeg"
        print(f"{what} at {url}  (Ctrl-C stops it)", flush=True)

    try:
        serve(args.host, args.port, config, max_sessions=args.max_sessions, session_timeout=args.session_timeout,
              on_ready=ready)
    except OSError as error:
        print(f"spineseg {args.command}: cannot serve on {args.host}:{args.port}: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    return None
