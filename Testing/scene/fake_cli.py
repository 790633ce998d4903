"""A stand-in for ``python -m SpineSegLib.cli segment ... --json-progress`` for the runner's tests.

    fake_cli.py MODE OUTPUT_DIR [STEPS] [DELAY]

Modes: ``slow`` (progress lines every DELAY s, a child process that sleeps, a partial output folder while it
works; publishes OUTPUT_DIR at the end), ``error`` (an error event, exit 2), ``crash`` (a traceback on stderr,
exit 1, no event), ``silent-exit`` (exit 0 without any event), ``noise`` (non-JSON lines between events).
"""

import json
import subprocess
import sys
import time
from pathlib import Path


def emit(event):
    print(json.dumps(event), flush=True)


def main():
    mode, output = sys.argv[1], Path(sys.argv[2]).absolute()
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.05
    if mode == "error":
        emit({"event": "progress", "fraction": 0.1, "stage": "reading the CT"})
        emit({"event": "error", "message": "input.nii does not look like a CT in Hounsfield units"})
        return 2
    if mode == "crash":
        emit({"event": "progress", "fraction": 0.1, "stage": "loading the model"})
        print("Traceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: CUDA out of memory",
              file=sys.stderr, flush=True)
        return 1
    if mode == "silent-exit":
        return 0
    child = None
    if mode == "slow":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        (output.parent / "child.pid").write_text(str(child.pid))
    partial = output.parent / f".{output.name}.partial-test"
    partial.mkdir(parents=True, exist_ok=True)
    (partial / "vertebrae.nii.gz").write_bytes(b"partial")
    for step in range(steps):
        if mode == "noise":
            print("some library warning", flush=True)
        emit({"event": "progress", "fraction": step / steps, "stage": f"step {step + 1} of {steps}"})
        time.sleep(delay)
    partial.rename(output)
    if child is not None:
        child.kill()
    emit({"event": "progress", "fraction": 1.0, "stage": "done"})
    emit({"event": "done", "output": str(output)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
