"""One embedded stack per data dir, enforced by the OS: an flock on `<data dir>/lock`.

The lock's file descriptor is handed to every process of the stack (redis-server, the workers), so
the lock is held for as long as ANY of them lives, not only the CLI: a CLI killed without cleanup
whose redis-server still runs keeps the data dir locked, and the next command cannot start a second
redis-server on the same AOF files (two servers on one AOF corrupted the index). The kernel releases
it when the last holder dies; no stale lock file to clean up by hand.

A second command on a busy data dir refuses at once with who holds it (waiting silently behind a long
ingest would look like a hang). Only when the holder is a command that has already died, and its
processes are still stopping (they get a signal when it dies: producer.children), it waits a few
seconds for them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from common.errors import ConfigError


class DataDirBusy(RuntimeError):
    """Another embedded stack serves this data dir."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "lock"
        self.fd: int | None = None

    def acquire(self, wait_for_dead_owner: float = 15.0) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_CREAT without truncating: the holder's owner record stays readable until we hold it.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:  # read-only, under a file, no permission: one line, exit 2
            raise ConfigError(
                "bad_data_dir", f"cannot use NEARDUP_DATA_DIR {self.path.parent}: {exc.strerror or exc}"
            ) from None
        deadline = time.monotonic() + wait_for_dead_owner
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                owner = self._owner()
                pid = int(owner.get("pid", 0) or 0)
                owner_alive = pid > 0 and _alive(pid)
                if owner_alive or time.monotonic() > deadline:
                    os.close(fd)
                    raise DataDirBusy(self._busy_message(owner, owner_alive)) from None
                time.sleep(0.1)
        self.fd = fd
        self.write_owner()

    def write_owner(self, **extra: Any) -> None:
        """Who holds the lock (for the message a second command prints), and the pids of its children."""
        if self.fd is None:
            return
        record = {"pid": os.getpid(), "argv": sys.argv, "started": time.time(), **extra}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(record).encode(), 0)

    def _owner(self) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.path.read_text() or "{}")
            if isinstance(data, dict):
                return data
        return {}

    def _busy_message(self, owner: dict[str, Any], owner_alive: bool) -> str:
        where = self.path.parent
        command = " ".join(["neardup", *map(str, owner.get("argv", [])[1:])]) if owner.get("argv") else ""
        if owner_alive:
            return (
                f"another neardup command is running on {where} (pid {owner.get('pid')}"
                + (f": {command[:120]}" if command else "")
                + "): wait for it to finish, or give this one its own NEARDUP_DATA_DIR"
            )
        children = owner.get("children") or []
        return (
            f"another neardup command is running on {where}: processes of an earlier command "
            f"(pid {owner.get('pid', '?')}, gone) still hold it"
            + (f" (pids {', '.join(map(str, children))})" if children else "")
            + "; they stop on their own within seconds — or stop them, then run this again"
        )

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # the last close of this open file releases the flock
            self.fd = None
