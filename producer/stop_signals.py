"""SIGINT, SIGTERM and SIGHUP all stop the CLI the way Ctrl-C does: by an exception that unwinds
through the normal cleanup (workers stopped, Redis shut down, the job cancelled). Python's default
for SIGTERM and SIGHUP is to die on the spot, which left the private redis-server and workers running.

While cleanup runs, another signal must not raise again (it would cut the cleanup short and leak the
processes not yet stopped): `deferred()` records it instead, and cleanup hurries (kills instead of
waiting for a warm shutdown).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; `signum` says which (the exit code is 128 + signum)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_raised: list[int] = []  # the stop signal already raised in this command, if any


def _raise(signum: int, frame: FrameType | None) -> None:
    # One stop is enough: a second one arriving while the first unwinds (outside `deferred`, e.g.
    # while the exit message is printed) must not escape `main` and kill the process by the signal.
    if _raised:
        return
    _raised.append(signum)
    raise Interrupted(signum)


def install() -> None:
    """Every stop signal raises Interrupted in the main thread (once per command)."""
    _raised.clear()
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, _raise)


@contextlib.contextmanager
def deferred(reraise: bool = False) -> Iterator[Callable[[], bool]]:
    """Inside: stop signals are recorded, not raised; yields `hurry()`, true once one arrived.
    With `reraise`, a signal that arrived inside is raised on leaving (around process starts, so a
    child is never started without its handle being kept)."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    arrived: list[int] = []
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for stop in STOP_SIGNALS:
        signal.signal(stop, lambda signum, frame: arrived.append(signum))
    try:
        yield lambda: bool(arrived)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if reraise and arrived:
        first = previous[arrived[0]]
        if callable(first):
            first(arrived[0], None)
        else:
            raise Interrupted(arrived[0])
