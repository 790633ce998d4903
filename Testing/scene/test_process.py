"""The out-of-process runner, with this Python standing in for Slicer's: progress, completion, cancel, crashes."""

import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from SpineSegLib import process
from SpineSegLib.errors import Cancelled, InputError

pytestmark = pytest.mark.slicer

FAKE_CLI = Path(__file__).resolve().parent / "fake_cli.py"


def fake(mode, output, *args, **kwargs):
    return process.ProcessRunner([sys.executable, str(FAKE_CLI), mode, str(output), *map(str, args)], output,
                                 **kwargs)


def test_segment_command():
    command = process.segment_command("in.nii.gz", "out", model="m", device="cuda", fast=True, python="py")
    assert command == ["py", "-m", "SpineSegLib.cli", "segment", "in.nii.gz", "-o", "out", "--device", "cuda",
                       "--json-progress", "--model", "m", "--fast"]
    assert process.segment_command("a", "b")[0] == sys.executable  # no Slicer application here
    with pytest.raises(ValueError):
        process.segment_command("a", "b", device="tpu")
    env = process.subprocess_environment()
    assert env["PYTHONPATH"].split(process.os.pathsep)[0] == str(process.MODULE_DIR)


def test_progress_lines_are_parsed_and_completion_reported(tmp_path):
    progress, finished = [], []
    runner = fake("noise", tmp_path / "out", 5, 0.01, on_progress=lambda f, s: progress.append((f, s)),
                  on_finished=finished.append).start()
    assert runner.running and runner.pid
    assert runner.wait(timeout=30) == process.DONE
    assert [f for f, _ in progress] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert progress[1][1] == "step 2 of 5"
    assert runner.output == (tmp_path / "out") and runner.output.is_dir()
    assert runner.fraction == 1.0 and runner.returncode == 0
    assert finished == [runner]  # on_finished once
    assert runner.poll() == process.DONE and finished == [runner]
    assert "some library warning" in runner.log_lines  # non-JSON output is kept, not parsed


def test_poll_never_blocks_and_delivers_on_the_callers_thread(tmp_path):
    import threading

    threads = set()
    runner = fake("slow", tmp_path / "out", 10, 0.05,
                  on_progress=lambda f, s: threads.add(threading.get_ident())).start()
    started = time.monotonic()
    while runner.poll() == process.RUNNING:
        assert time.monotonic() - started < 30
        time.sleep(0.01)
    assert runner.state == process.DONE
    assert threads == {threading.get_ident()}


def test_error_event_gives_its_message(tmp_path):
    runner = fake("error", tmp_path / "out").start()
    assert runner.wait(timeout=30) == process.ERROR
    assert runner.message == "input.nii does not look like a CT in Hounsfield units"
    assert runner.returncode == 2 and not (tmp_path / "out").exists()
    with pytest.raises(RuntimeError, match="does not look like a CT"):
        runner.result()


def test_crash_reports_exit_code_and_stderr_tail(tmp_path):
    runner = fake("crash", tmp_path / "out").start()
    assert runner.wait(timeout=30) == process.ERROR
    assert "stopped unexpectedly (exit code 1)" in runner.message
    assert "CUDA out of memory" in runner.message and "Traceback" in runner.message


def test_exit_without_result(tmp_path):
    runner = fake("silent-exit", tmp_path / "out").start()
    assert runner.wait(timeout=30) == process.ERROR
    assert "exited without reporting a result" in runner.message


def test_missing_python_is_a_clear_error(tmp_path):
    finished = []
    runner = process.ProcessRunner(["/nonexistent/PythonSlicer", "-m", "x"], tmp_path / "out",
                                   on_finished=finished.append).start()
    assert runner.state == process.ERROR and "Could not start the segmentation process" in runner.message
    assert finished == [runner]


def test_cancel_mid_run_kills_the_tree_and_leaves_no_output(tmp_path):
    progress = []
    runner = fake("slow", tmp_path / "out", 400, 0.05, on_progress=lambda f, s: progress.append(f)).start()
    deadline = time.monotonic() + 30
    while len(progress) < 3 and time.monotonic() < deadline:
        runner.poll()
        time.sleep(0.02)
    child = int((tmp_path / "child.pid").read_text())
    assert psutil.pid_exists(child) and len(progress) >= 3
    assert (tmp_path / ".out.partial-test").is_dir()  # the run is writing
    pid = runner.pid
    started = time.monotonic()
    runner.cancel()
    assert time.monotonic() - started < 10
    assert runner.state == process.CANCELLED and runner.message == "cancelled by the user"
    for gone in (pid, child):
        assert not psutil.pid_exists(gone) or psutil.Process(gone).status() == psutil.STATUS_ZOMBIE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child.pid"]  # no output, no partial folder
    seen = len(progress)
    time.sleep(0.2)
    assert runner.poll() == process.CANCELLED and len(progress) == seen  # nothing more after cancel
    runner.cancel()  # harmless twice


def test_cancel_keeps_an_existing_output_folder(tmp_path):
    previous = tmp_path / "out"
    previous.mkdir()
    (previous / "report.json").write_text("{}")
    runner = fake("slow", previous, 400, 0.05).start()
    time.sleep(0.5)
    runner.cancel()
    assert runner.state == process.CANCELLED
    assert (previous / "report.json").read_text() == "{}"
    assert not list(tmp_path.glob(".out.*"))


def test_cancel_restores_an_output_folder_the_run_had_moved_aside(tmp_path):
    out = tmp_path / "out"
    runner = fake("slow", out, 400, 0.05)
    out.mkdir()
    (out / "report.json").write_text("old")
    runner.start()
    time.sleep(0.3)
    out.rename(tmp_path / ".out.old-123")  # what atomic_output_dir does just before publishing
    runner.cancel()
    assert (out / "report.json").read_text() == "old"
    assert not list(tmp_path.glob(".out.*"))


def test_kill_process_tree_of_a_finished_process_is_harmless():
    assert process.kill_process_tree(2**22 + 12345) == []


# --- in-process mode -------------------------------------------------------------------------------------------
def _stand_in(steps=5, delay=0.01, fail=None):
    def segment(ct, model=None, device="auto", fast=False, progress=None, cancel=None):
        for step in range(steps):
            if fail is not None and step == 2:
                raise fail
            progress(step / steps, f"step {step}")
            time.sleep(delay)
        return {"ct": ct, "model": model, "device": device, "fast": fast}

    return segment


def test_in_process_runner_reports_progress_and_result():
    progress = []
    runner = process.InProcessRunner("ct", model="m", device="cpu", fast=True,
                                     on_progress=lambda f, s: progress.append(f), segment=_stand_in()).start()
    assert runner.wait(timeout=10) == process.DONE
    assert runner.result() == {"ct": "ct", "model": "m", "device": "cpu", "fast": True}
    assert progress == [0.0, 0.2, 0.4, 0.6, 0.8]


def test_in_process_runner_errors_and_cancel():
    failing = process.InProcessRunner("ct", segment=_stand_in(fail=InputError("not a CT"))).start()
    assert failing.wait(timeout=10) == process.ERROR and failing.message == "not a CT"
    crashing = process.InProcessRunner("ct", segment=_stand_in(fail=ZeroDivisionError("boom"))).start()
    assert crashing.wait(timeout=10) == process.ERROR and crashing.message == "ZeroDivisionError: boom"
    slow = process.InProcessRunner("ct", segment=_stand_in(steps=1000, delay=0.01)).start()
    time.sleep(0.1)
    slow.cancel()
    assert slow.state == process.CANCELLED
    with pytest.raises(RuntimeError):
        slow.result()
    assert issubclass(Cancelled, Exception)


# --- the real command line -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_cli_run(cli_run, phantom):
    from SpineSegLib.results import RESULT_FILES

    runner, progress = cli_run
    assert runner.state == process.DONE and runner.returncode == 0
    assert progress and progress[-1][0] == 1.0
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions) and all(0.0 <= f <= 1.0 for f in fractions)
    assert len({s for _, s in progress}) >= 3  # several stages named
    assert sorted(p.name for p in runner.output.iterdir()) == sorted(RESULT_FILES)
    result = runner.result()
    assert result.labels.shape == phantom.ct.shape
    np.testing.assert_allclose(result.labels.affine, phantom.ct.affine, atol=1e-4)
    assert result.heatmap.array.min() >= 0 and result.heatmap.array.max() <= 1
    assert result.report["mode"] in ("fast", "full")
