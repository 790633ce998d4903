"""Time ``spineseg segment`` end to end on a full-size phantom and report wall time and peak memory.

    python benchmarks/bench_segment.py [--work DIR] [--fast] [--model PATH] [--repeat N]

The phantom (512×512×400 voxels at 0.8×0.8×1.0 mm, thoraco-lumbar, the size of a clinical CT) is generated
once into the work folder. Each run is a fresh process, as a user or the Slicer module runs it; peak memory is
the largest resident set of that process. Targets on the 2-core reference machine: ≤ 60 s and ≤ 6 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

SHAPE = "512,512,400"
SPACING = "0.8,0.8,1.0"


def run(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak_kb, before) / 1024**2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="benchmark-work", help="folder for the phantom and outputs")
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    work = Path(args.work)
    phantom = work / "phantom"
    if not (phantom / "ct.nii.gz").is_file():
        print(f"generating the {SHAPE} phantom at {SPACING} mm ...", flush=True)
        subprocess.run([sys.executable, "-m", "SpineSegLib.cli", "phantom", "-o", str(phantom), "--seed", "42",
                        "--region", "thoracolumbar", "--shape", SHAPE, "--spacing", SPACING, "--lesions", "3",
                        "--json-progress"], check=True, stdout=subprocess.DEVNULL)
    rows = []
    for attempt in range(args.repeat):
        out = work / f"result-{attempt}"
        shutil.rmtree(out, ignore_errors=True)
        command = [sys.executable, "-m", "SpineSegLib.cli", "segment", str(phantom / "ct.nii.gz"), "-o", str(out),
                   "--device", "cpu", "--json-progress"] + (["--fast"] if args.fast else [])
        if args.model:
            command += ["--model", args.model]
        seconds, peak_gb = run(command)
        report = json.loads((out / "report.json").read_text())
        rows.append({"wall_s": round(seconds, 1), "peak_rss_gb": round(peak_gb, 2), "stages": report["timings"],
                     "vertebrae": len(report["vertebrae"])})
        print(json.dumps(rows[-1]), flush=True)
    best = min(rows, key=lambda r: r["wall_s"])
    print(f"\nspineseg segment {'--fast ' if args.fast else ''}on {SHAPE} voxels at {SPACING} mm "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores): "
          f"best wall time {best['wall_s']} s, peak memory {best['peak_rss_gb']} GB "
          f"(targets: <= 60 s, <= 6 GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
