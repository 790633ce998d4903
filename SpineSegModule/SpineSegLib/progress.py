"""The one progress and cancel protocol shared by the command line, Slicer and the web front end.

A job reports ``progress(fraction, stage)`` with fraction in [0, 1] and a short human stage name, and checks
a :class:`CancelToken` between steps; cancelling raises :class:`~SpineSegLib.errors.Cancelled` at the next
check, and writers only publish results after the last check, so nothing half-written is left behind.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .errors import Cancelled

ProgressCallback = Callable[[float, str], None]


def no_progress(fraction: float, stage: str) -> None:  # noqa: ARG001 - the protocol's signature
    """A progress callback that ignores updates."""


class CancelToken:
    """Thread-safe cancel flag; a host sets it, the job polls it."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


class SubProgress:
    """Maps a sub-task's [0, 1] onto [start, stop] of its parent's progress, so stages nest cleanly."""

    def __init__(self, parent: ProgressCallback | None, start: float, stop: float,
                 cancel: CancelToken | None = None):
        self.parent = parent or no_progress
        self.start, self.stop = start, stop
        self.cancel = cancel

    def __call__(self, fraction: float, stage: str) -> None:
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()
        fraction = min(max(fraction, 0.0), 1.0)
        self.parent(self.start + (self.stop - self.start) * fraction, stage)
