"""Run a segmentation outside the host process, with progress, cancel and clear errors.

:class:`ProcessRunner` starts ``[python, -m, SpineSegLib.cli, segment, INPUT, -o, OUT, ..., --json-progress]``
(inside Slicer ``python`` is Slicer's own ``PythonSlicer``), reads its JSON progress lines on a reader thread,
and hands them to the host through :meth:`ProcessRunner.poll` (call it from a ``qt.QTimer`` in a GUI: callbacks
then run on the GUI thread) or :meth:`ProcessRunner.wait` (scripts and tests). :meth:`ProcessRunner.cancel`
terminates the whole process tree (psutil) and removes anything it left in the output location, so a cancelled
run leaves no output folder; a folder that existed before the run is left as it was.

:class:`InProcessRunner` has the same interface around :func:`SpineSegLib.inference.segment_volume` on a worker
thread (for tests and scripting: no second Python needed).

States: ``idle`` -> ``running`` -> one of ``done``, ``error``, ``cancelled``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

IDLE, RUNNING, DONE, ERROR, CANCELLED = "idle", "running", "done", "error", "cancelled"
FINISHED_STATES = (DONE, ERROR, CANCELLED)
STDERR_TAIL_LINES = 25
MODULE_DIR = Path(__file__).resolve().parent.parent  # the folder that holds the SpineSegLib package

ProgressCallback = Callable[[float, str], None]


def wait_for(job, timeout: float | None = None, interval: float = 0.05,
             idle: Callable[[], None] | None = None) -> str:
    """Call ``job.poll()`` until it reports a finished state (or ``timeout`` s pass); returns ``job.state``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while job.poll() not in FINISHED_STATES:
        if deadline is not None and time.monotonic() > deadline:
            break
        if idle is not None:
            idle()
        time.sleep(interval)
    return job.state


def python_executable() -> str:
    """The Python that runs the CLI: Slicer's own ``PythonSlicer`` inside Slicer, else this interpreter."""
    try:
        import slicer

        in_slicer = getattr(slicer, "app", None) is not None
    except ImportError:
        in_slicer = False
    if in_slicer:
        found = shutil.which("PythonSlicer")
        if found:
            return found
        candidate = Path(sys.executable).with_name("PythonSlicer" + (".exe" if os.name == "nt" else ""))
        if candidate.is_file():
            return str(candidate)
    return sys.executable


def segment_command(input_path: str | Path, output_dir: str | Path, model: str | Path | None = None,
                    device: str = "auto", fast: bool = False, python: str | None = None) -> list[str]:
    """The command line of one out-of-process segmentation."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    command = [python or python_executable(), "-m", "SpineSegLib.cli", "segment", str(input_path),
               "-o", str(output_dir), "--device", device, "--json-progress"]
    if model:
        command += ["--model", str(model)]
    if fast:
        command.append("--fast")
    return command


def subprocess_environment(extra: dict | None = None) -> dict:
    """This environment with SpineSegLib importable and unbuffered output."""
    env = dict(os.environ)
    paths = [str(MODULE_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    if extra:
        env.update(extra)
    return env


def kill_process_tree(pid: int, timeout: float = 3.0) -> list[int]:
    """Terminate a process and all its descendants (then kill what is left after ``timeout`` s).

    Returns the PIDs that were found. Uses psutil on every platform, plus the process group on POSIX (the runner
    starts the CLI in its own session), so children started while terminating are caught too.
    """
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    try:
        processes = [parent] + parent.children(recursive=True)
    except psutil.NoSuchProcess:
        processes = [parent]
    pids = [p.pid for p in processes]
    group = _process_group(pid)
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            process.terminate()
    if group is not None:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGTERM)
    _gone, alive = psutil.wait_procs(processes, timeout=timeout)
    if group is not None:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            process.kill()
    psutil.wait_procs(alive, timeout=timeout)
    return pids


def _process_group(pid: int) -> int | None:
    if os.name != "posix":
        return None
    try:
        group = os.getpgid(pid)
    except OSError:
        return None
    return group if group != os.getpgid(0) else None  # never signal our own group


class _RunnerBase(ABC):
    """State, progress and callbacks shared by the out-of-process and in-process runners."""

    def __init__(self, on_progress: ProgressCallback | None = None,
                 on_finished: Callable[[_RunnerBase], None] | None = None):
        self.on_progress = on_progress
        self.on_finished = on_finished
        self.state = IDLE
        self.fraction = 0.0
        self.stage = ""
        self.message = ""  # error message (state ERROR) or why it was cancelled
        self._events: queue.Queue = queue.Queue()
        self._finished_notified = False
        self._cancel_requested = False

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def _deliver_progress(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            self._handle_event(event)

    def _handle_event(self, event: dict) -> None:
        if event.get("event") == "progress":
            try:
                self.fraction = min(max(float(event.get("fraction", self.fraction)), 0.0), 1.0)
            except (TypeError, ValueError):
                return
            self.stage = str(event.get("stage", self.stage))
            if self.on_progress is not None and not self._cancel_requested:
                self.on_progress(self.fraction, self.stage)

    def _finish(self, state: str, message: str = "") -> None:
        self.state = state
        self.message = message
        if not self._finished_notified:
            self._finished_notified = True
            if self.on_finished is not None:
                self.on_finished(self)

    def wait(self, timeout: float | None = None, interval: float = 0.05,
             idle: Callable[[], None] | None = None) -> str:
        """Poll until finished (or ``timeout`` s); ``idle`` runs between polls (e.g. ``slicer.app.processEvents``)."""
        return wait_for(self, timeout, interval, idle)

    @abstractmethod
    def poll(self) -> str:
        """Advance the job without blocking and return its state."""


class ProcessRunner(_RunnerBase):
    """One out-of-process job (the SpineSeg CLI with ``--json-progress``, or any command speaking that protocol).

    ``output_dir``: where the command publishes its folder; on cancel anything the run left there is removed
    (a folder that existed before the run is kept, or restored if the run had moved it aside).
    """

    def __init__(self, command: list[str], output_dir: str | Path | None = None,
                 on_progress: ProgressCallback | None = None,
                 on_finished: Callable[[ProcessRunner], None] | None = None,
                 env: dict | None = None, cwd: str | Path | None = None):
        super().__init__(on_progress, on_finished)
        self.command = [str(c) for c in command]
        self.output_dir = Path(output_dir).absolute() if output_dir is not None else None
        self.env = env if env is not None else subprocess_environment()
        self.cwd = str(cwd) if cwd is not None else None
        self.output: Path | None = None  # the folder the command reported in its "done" event
        self.returncode: int | None = None
        self.log_lines: collections.deque = collections.deque(maxlen=200)  # non-JSON stdout lines
        self.stderr_lines: collections.deque = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.process: subprocess.Popen | None = None
        self._threads: list[threading.Thread] = []
        self._done_event: dict | None = None
        self._error_event: dict | None = None
        self._output_existed = False
        self._started_at = 0.0
        self.elapsed = 0.0

    @classmethod
    def for_segmentation(cls, input_path, output_dir, model=None, device="auto", fast=False, python=None,
                         **kwargs) -> ProcessRunner:
        return cls(segment_command(input_path, output_dir, model, device, fast, python), output_dir, **kwargs)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def stderr_tail(self) -> str:
        return "\n".join(self.stderr_lines)

    def start(self) -> ProcessRunner:
        if self.state != IDLE:
            raise RuntimeError("this runner was already started")
        self._output_existed = self.output_dir is not None and self.output_dir.exists()
        kwargs = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True  # own process group: the tree can be signalled as a whole
        else:
            kwargs["creationflags"] = (getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
                                       | getattr(subprocess, "CREATE_NO_WINDOW", 0))
        try:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=self.env, cwd=self.cwd, text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        except OSError as error:
            self.state = RUNNING  # so that _finish reports it like any other failure
            self._finish(ERROR, f"Could not start the segmentation process ({self.command[0]}): {error}")
            return self
        self._started_at = time.monotonic()
        self.state = RUNNING
        self._threads = [
            threading.Thread(target=self._read_stdout, name="spineseg-stdout", daemon=True),
            threading.Thread(target=self._read_stderr, name="spineseg-stderr", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    # --- reader threads (never call host code) ---
    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                self.log_lines.append(line)
                continue
            if isinstance(event, dict) and "event" in event:
                self._events.put(event)
            else:
                self.log_lines.append(line)

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            line = line.rstrip()
            if line:
                self.stderr_lines.append(line)

    # --- host side ---
    def _handle_event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "done":
            self._done_event = event
        elif kind == "error":
            self._error_event = event
        else:
            super()._handle_event(event)

    def poll(self) -> str:
        """Deliver pending progress to the callbacks and return the state; cheap, never blocks."""
        if self.state != RUNNING:
            return self.state
        self._deliver_progress()
        if self.process.poll() is None:
            return self.state
        for thread in self._threads:  # the pipes are closed once the process is gone: the readers end quickly
            thread.join(timeout=2.0)
        self._deliver_progress()
        self.returncode = self.process.returncode
        self.elapsed = time.monotonic() - self._started_at
        self._close_pipes()
        if self._cancel_requested:
            self._finish(CANCELLED, "cancelled by the user")
        elif self._done_event is not None and self.returncode == 0:
            output = Path(self._done_event.get("output") or (self.output_dir or ""))
            if output and output.is_dir():
                self.output = output
                self.fraction, self.stage = 1.0, "done"
                self._finish(DONE)
            else:
                self._finish(ERROR, f"The segmentation finished but its output folder {output} is missing.")
        elif self._error_event is not None:
            self._finish(ERROR, str(self._error_event.get("message") or "the segmentation failed"))
        else:
            self._finish(ERROR, self._crash_message())
        return self.state

    def _crash_message(self) -> str:
        code = self.returncode
        if code is not None and code < 0:
            try:
                how = f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        elif code == 0:
            how = "exited without reporting a result"
        else:
            how = f"exit code {code}"
        message = f"The segmentation process stopped unexpectedly ({how})."
        tail = self.stderr_tail or "\n".join(list(self.log_lines)[-10:])
        if tail:
            message += f"\nLast output:\n{tail}"
        return message

    def cancel(self, timeout: float = 3.0) -> None:
        """Stop the run: terminate the process tree, remove its output, report ``cancelled``. Blocks until done."""
        if self.state != RUNNING:
            return
        self._cancel_requested = True
        if self.process.poll() is None:
            kill_process_tree(self.process.pid, timeout=timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        self._remove_output()
        self.poll()

    def _remove_output(self) -> None:
        if self.output_dir is None:
            return
        parent, name = self.output_dir.parent, self.output_dir.name
        if not parent.is_dir():
            return
        for leftover in list(parent.glob(f".{name}.partial-*")):
            shutil.rmtree(leftover, ignore_errors=True)
        backups = sorted(parent.glob(f".{name}.old-*"))
        if self._output_existed:
            if not self.output_dir.exists() and backups:
                backups[-1].rename(self.output_dir)  # the run had moved the previous result aside
            return
        if self.output_dir.exists():
            shutil.rmtree(self.output_dir, ignore_errors=True)
        for backup in backups:
            shutil.rmtree(backup, ignore_errors=True)

    def _close_pipes(self) -> None:
        for stream in (self.process.stdout, self.process.stderr):
            with contextlib.suppress(Exception):
                stream.close()

    def result(self):
        """The :class:`~SpineSegLib.results.SegmentationResult` of a finished run (reads the output folder)."""
        if self.state != DONE:
            raise RuntimeError(f"no result: the run is {self.state}" + (f" ({self.message})" if self.message else ""))
        from .results import load_results

        return load_results(self.output)


class InProcessRunner(_RunnerBase):
    """:func:`~SpineSegLib.inference.segment_volume` on a worker thread, with the :class:`ProcessRunner` interface.

    ``segment``: the function to run (default: ``segment_volume``), called as
    ``segment(ct, model=..., device=..., fast=..., progress=..., cancel=...)``.
    """

    def __init__(self, ct, model=None, device: str = "auto", fast: bool = False,
                 on_progress: ProgressCallback | None = None,
                 on_finished: Callable[[InProcessRunner], None] | None = None, segment=None):
        super().__init__(on_progress, on_finished)
        from .progress import CancelToken

        self.ct, self.model, self.device, self.fast = ct, model, device, fast
        self.segment = segment
        self.token = CancelToken()
        self._result = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._started_at = 0.0
        self.elapsed = 0.0

    def start(self) -> InProcessRunner:
        if self.state != IDLE:
            raise RuntimeError("this runner was already started")
        self.state = RUNNING
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._work, name="spineseg-inprocess", daemon=True)
        self._thread.start()
        return self

    def _work(self) -> None:
        try:
            segment = self.segment
            if segment is None:
                from .inference import segment_volume as segment
            self._result = segment(self.ct, model=self.model, device=self.device, fast=self.fast,
                                   progress=self._progress, cancel=self.token)
        except BaseException as error:  # noqa: BLE001 - reported to the host in poll()
            self._error = error

    def _progress(self, fraction: float, stage: str) -> None:
        self.token.raise_if_cancelled()
        self._events.put({"event": "progress", "fraction": fraction, "stage": stage})

    def poll(self) -> str:
        if self.state != RUNNING:
            return self.state
        self._deliver_progress()
        if self._thread.is_alive():
            return self.state
        self.elapsed = time.monotonic() - self._started_at
        from .errors import Cancelled, SpineSegError

        if self._cancel_requested or isinstance(self._error, Cancelled):
            self._result = None
            self._finish(CANCELLED, "cancelled by the user")
        elif self._error is not None:
            error = self._error
            text = str(error) if isinstance(error, SpineSegError) else f"{type(error).__name__}: {error}"
            self._finish(ERROR, text)
        else:
            self.fraction, self.stage = 1.0, "done"
            self._finish(DONE)
        return self.state

    def cancel(self, timeout: float = 60.0) -> None:
        """Ask the job to stop at its next check and wait (up to ``timeout`` s) for it; its result is dropped."""
        if self.state != RUNNING:
            return
        self._cancel_requested = True
        self.token.cancel()
        self._thread.join(timeout=timeout)
        self.poll()

    def result(self):
        if self.state != DONE:
            raise RuntimeError(f"no result: the run is {self.state}" + (f" ({self.message})" if self.message else ""))
        return self._result
