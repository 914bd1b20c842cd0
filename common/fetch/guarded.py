"""Guarded fetch of one image: http(s) URL, file:// URL or plain local path -> bytes, with retries.

The catalog is untrusted input, so a source must not turn a worker into a proxy for the internal network
(SSRF), a reader of files outside the allowed roots, or a sink for endless bodies. The rules are in
common.fetch.policy, the HTTP side in common.fetch.http. Every rule failure is a FetchError with a short
`reason` and a `permanent` flag that tells the caller whether retrying can help.
"""

from __future__ import annotations

import os
import random
import stat
import time
from collections.abc import Callable
from pathlib import Path

import requests

from common.errors import FetchError
from common.fetch.http import fetch_http, make_session
from common.fetch.policy import FetchPolicy, check_path, source_scheme


def fetch(source: str, policy: FetchPolicy, session: requests.Session | None = None) -> bytes:
    """The bytes of one image source, or FetchError. See common.fetch.policy for the rules.

    Pass a session from `make_session(policy)` to reuse connections; a session from elsewhere still
    gets every check_url check, but not the connect-time guard against DNS rebinding."""
    if not isinstance(source, str) or not source.strip():
        raise FetchError("bad_url", "empty source")
    source = source.strip()
    scheme = source_scheme(source)
    if scheme in ("", "file"):
        return _read_file(check_path(source, policy), policy)
    if scheme not in ("http", "https"):
        raise FetchError("bad_scheme", f"scheme {scheme!r} is not http, https or file")
    if session is not None:
        return fetch_http(source, policy, session)
    with make_session(policy) as own:
        return fetch_http(source, policy, own)


def _read_file(path: Path, policy: FetchPolicy) -> bytes:
    # O_NOFOLLOW: if the last component was swapped for a symlink after check_path, refuse.
    # O_NONBLOCK: opening a FIFO planted under a root must not hang the worker.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FetchError("not_found", str(path)) from None
    except OSError as exc:
        raise FetchError("unreadable", f"{path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FetchError("not_a_file", str(path))
        if info.st_size > policy.max_bytes:
            raise FetchError("too_large", f"{info.st_size} bytes > {policy.max_bytes}")
        with os.fdopen(fd, "rb") as fh:
            fd = -1  # owned by fh now
            data = fh.read(policy.max_bytes + 1)  # the file may have grown since fstat
    except OSError as exc:
        raise FetchError("unreadable", f"{path}: {exc.strerror}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > policy.max_bytes:
        raise FetchError("too_large", f"more than {policy.max_bytes} bytes")
    if not data:
        raise FetchError("empty", str(path))
    return data


def fetch_with_retries(
    source: str,
    policy: FetchPolicy,
    retries: int,
    backoff: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    session: requests.Session | None = None,
    max_delay: float = 30.0,
) -> bytes:
    """fetch(), retrying transient errors up to `retries` times with exponential backoff and full
    jitter (spreads a burst of workers hitting one recovering host); re-raises the last error.
    Each attempt has its own policy.deadline."""
    attempt = 0
    while True:
        try:
            return fetch(source, policy, session)
        except FetchError as exc:
            if exc.permanent or attempt >= retries:
                raise
            ceiling = min(max_delay, backoff * (2**attempt))
            sleep(random.uniform(ceiling / 2, ceiling))
            attempt += 1
