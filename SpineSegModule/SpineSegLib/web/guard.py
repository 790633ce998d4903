"""Every browser action runs guarded: a failure becomes a message on that session's page, never a dead server.

:class:`~SpineSegLib.errors.SpineSegError` messages are shown as they are; anything else is shown with its type
and logged with its traceback. Busy flags are cleared whatever happens.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging

from ..errors import SpineSegError

log = logging.getLogger("spineseg.web")

ERROR = "ss_error"
MESSAGE = "ss_message"
BUSY = "ss_busy"
BUSY_TEXT = "ss_busy_text"


def describe(error: BaseException, action: str) -> str:
    if isinstance(error, SpineSegError):
        return str(error)
    if isinstance(error, FileExistsError):
        return str(error)
    return f"{action} failed: {type(error).__name__}: {error}"


def report(state, error: BaseException, action: str) -> None:
    if not isinstance(error, SpineSegError):
        log.error("%s failed", action, exc_info=error)
    with state:
        state[ERROR] = describe(error, action)
        state[MESSAGE] = ""
        state[BUSY] = False
        state[BUSY_TEXT] = ""


def guarded(action: str, busy: str | None = None):
    """Decorate a controller method (sync or async) of an object with a ``state`` attribute."""

    def decorate(method):
        if inspect.iscoroutinefunction(method):
            @functools.wraps(method)
            async def run_async(self, *args, **kwargs):
                _start(self.state, busy)
                if busy:
                    await asyncio.sleep(0.05)  # let the busy flag reach the page before the work starts
                try:
                    return await method(self, *args, **kwargs)
                except Exception as error:  # noqa: BLE001 - shown on the page, logged, the session goes on
                    report(self.state, error, action)
                    return None
                finally:
                    _stop(self.state, busy)
            return run_async

        @functools.wraps(method)
        def run(self, *args, **kwargs):
            _start(self.state, busy)
            try:
                return method(self, *args, **kwargs)
            except Exception as error:  # noqa: BLE001 - shown on the page, logged, the session goes on
                report(self.state, error, action)
                return None
            finally:
                _stop(self.state, busy)
        return run

    return decorate


def _start(state, busy: str | None) -> None:
    with state:
        state[ERROR] = ""
        if busy:
            state[BUSY] = True
            state[BUSY_TEXT] = busy


def _stop(state, busy: str | None) -> None:
    if busy:
        with state:
            state[BUSY] = False
            state[BUSY_TEXT] = ""
