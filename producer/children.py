"""Child processes that cannot outlive the command that started them.

Linux `prctl(PR_SET_PDEATHSIG)`: the kernel sends the child a signal when its parent dies, even by
SIGKILL or a crash that no Python cleanup survives. Elsewhere it is a no-op (the normal cleanup path
in producer.local still stops every child).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A Popen `preexec_fn` that arranges `sig` for the child when this process dies (None off Linux).
    The parent's pid is checked after the call: a parent that died before it gives the signal at once."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec
