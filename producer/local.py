"""The embedded stack: a private redis-server plus real Celery worker processes, started for one
command and stopped after it. The index stays on disk (AOF) in the data dir for the next run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from common.config.settings import Settings
from common.index import keys
from producer.children import die_with_parent
from producer.datadir_lock import DataDirLock
from producer.redis_server import RedisServer, StackFailed
from producer.stop_signals import deferred


def celery_command(*args: str) -> list[str]:
    """`celery -A workers.app ...` with this interpreter, so the venv's Celery and code are used."""
    return [sys.executable, "-m", "celery", "-A", "workers.app", *args]


def worker_command(
    queues: Sequence[str], concurrency: int, name: str, loglevel: str = "WARNING"
) -> list[str]:
    return celery_command(
        "worker",
        "-Q",
        ",".join(queues),
        "-c",
        str(concurrency),
        "-P",
        "prefork",
        "-n",
        name,
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
        "-E",
    )


def boot_command(queues: Sequence[str], concurrency: int, name: str, die_with_parent: bool) -> list[str]:
    """The worker the producer starts: `workers.boot`, the same app.Worker without Celery's command
    line (~0.7 s less start-up), announcing itself in Redis when it consumes."""
    cmd = [sys.executable, "-m", "workers.boot", "--queues", ",".join(queues)]
    cmd += ["--concurrency", str(concurrency), "--name", name]
    return cmd + (["--die-with-parent"] if die_with_parent else [])


class WorkerProcess:
    """One Celery worker subprocess with its own environment."""

    def __init__(
        self,
        settings: Settings,
        queues: Sequence[str],
        concurrency: int,
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = f"neardup-{uuid.uuid4().hex[:8]}@%h"
        self.settings = settings
        self.extra_env = dict(env or {})  # on top of the settings (tests: fault hooks)
        self.queues = tuple(queues)
        self.concurrency = concurrency
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        # Set by LocalStack: the data dir lock's fd, held by the worker too, and death with the CLI.
        self.pass_fds: tuple[int, ...] = ()
        self.die_with_parent = False

    @property
    def hostname(self) -> str:
        return self.name.replace("%h", os.uname().nodename)

    def start(self) -> WorkerProcess:
        env = {**os.environ, **self.settings.to_env(), **self.extra_env}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed in stop()
        self._log = log
        with deferred(reraise=True):  # a stop signal now is raised once the handle is kept
            self.proc = subprocess.Popen(
                boot_command(self.queues, self.concurrency, self.name, self.die_with_parent),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killpg reaches its pool children
                pass_fds=self.pass_fds,
                # SIGKILL, not SIGTERM: a warm shutdown would wait on a broker that dies at the same time.
                preexec_fn=die_with_parent(signal.SIGKILL) if self.die_with_parent else None,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0, hurry: Callable[[], bool] = lambda: False) -> None:
        """Warm shutdown (finish the current task, ack, exit); killed after `timeout` or as soon as
        `hurry()` (a second Ctrl-C). The whole process group goes: no pool child outlives it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline and not hurry():
                time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # also children left by a main that exited
        self.proc.wait()
        self._log.close()


class LocalStack:
    """Context manager: private Redis (+ workers unless `workers=0`), settings pointing at them.

    It owns what it starts: every process holds the data dir lock (one stack per data dir, even when
    the CLI died), dies with the CLI (PDEATHSIG), and is stopped on the way out whatever the exit:
    a normal end, an exception, or a stop signal (producer.stop_signals turns those into exceptions).
    """

    def __init__(
        self,
        settings: Settings,
        extra_roots: Iterable[Path] = (),
        workers: int | None = None,
        wait_ready: bool = True,
    ) -> None:
        roots = tuple(dict.fromkeys([*settings.file_roots, *(Path(p).resolve() for p in extra_roots)]))
        self.base = replace(settings, file_roots=roots)
        self.n_workers = settings.workers if workers is None else workers
        self.redis = RedisServer(settings.data_dir)
        self.workers: list[WorkerProcess] = []
        self.settings = self.base
        self.lock = DataDirLock(settings.data_dir)
        self.timings: dict[str, float] = {}  # seconds from __enter__ per phase (benchmarks/bench_startup)
        # False: __enter__ returns once the workers are started and the caller calls wait_ready()
        # after its own set-up, which then overlaps the workers' boot (producer.session).
        self.wait_for_workers = wait_ready

    def __enter__(self) -> LocalStack:
        t0 = time.monotonic()
        try:
            self.lock.acquire()
            self.redis.pass_fds = (self.lock.fd,) if self.lock.fd is not None else ()
            self.redis.die_with_parent = True
            self.redis.start()
            self.timings["redis"] = time.monotonic() - t0
            self.settings = replace(self.base, redis_url=self.redis.url)
            self._forget_dead_commands()
            if self.n_workers:
                log = self.base.data_dir / "worker.log"
                worker = WorkerProcess(self.settings, ("ingest", "query"), self.n_workers, log)
                worker.pass_fds, worker.die_with_parent = self.redis.pass_fds, True
                self.workers.append(worker.start())
                self.lock.write_owner(
                    children=[p.pid for p in (self.redis.proc, worker.proc) if p is not None]
                )
                self._t0 = t0
                if self.wait_for_workers:
                    self.wait_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _forget_dead_commands(self) -> None:
        """Empty the private broker, at start and once the workers are stopped: no other command uses
        it (we hold the lock), so what it holds (queued or unacked tasks, readiness marks) belongs to
        a command that was interrupted or killed, and must not run inside a later one (an interrupted
        ingest's rows indexed by a later `--tops-only` ingest)."""
        import redis

        from common.config.celery_conf import broker_and_backend  # light: not producer.connection (OpenCV)
        from common.config.redis_urls import for_redis_py

        broker_url = for_redis_py(broker_and_backend(self.settings)[0])
        # Only the private Redis: a NEARDUP_BROKER_URL of its own may be shared with other commands.
        if self.settings.broker_url is None and broker_url.startswith("unix://"):
            with redis.Redis.from_url(broker_url, socket_connect_timeout=5) as broker:
                if broker.connection_pool.connection_kwargs.get("db") != 0:  # never the index's db
                    broker.flushdb()
        with redis.Redis.from_url(self.redis.url, socket_connect_timeout=5) as r:
            stale = list(r.scan_iter(keys.worker_ready("*"), count=1000))
            if stale:
                r.delete(*stale)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until every started worker consumes: each sets a key in Redis then (workers.boot).
        Polling one key costs a round trip; a broadcast ping waits out its whole timeout."""
        import redis

        r = redis.Redis.from_url(self.redis.url)
        pending = {keys.worker_ready(w.hostname): w for w in self.workers}
        deadline = time.monotonic() + timeout
        try:
            while pending and time.monotonic() < deadline:
                dead = [w for w in pending.values() if not w.alive()]
                if dead:
                    raise StackFailed(f"a worker exited at start; see {dead[0].log_path}")
                names = list(pending)
                for name, ready in zip(names, r.mget(names), strict=True):
                    if ready is not None:
                        del pending[name]
                time.sleep(0.01)
        finally:
            r.close()
        if pending:
            raise StackFailed(
                f"workers did not answer within {timeout} s; see {self.base.data_dir / 'worker.log'}"
            )
        if self.workers:
            self.timings["workers"] = time.monotonic() - getattr(self, "_t0", time.monotonic())

    def __exit__(self, *exc: object) -> None:
        # A second signal during this cleanup does not cut it short: it only makes it hurry.
        with deferred() as hurry:
            for w in self.workers:
                # Killed, not a warm shutdown (which takes 2-3 s even idle): after a finished job
                # nothing runs; after an interrupt, a running task is cut wherever it is, but each
                # product's index write is one atomic Lua call, so no product is half written. Its
                # message is dropped with the private broker's content (_forget_dead_commands); the
                # re-run redoes what is not indexed.
                w.stop(timeout=0, hurry=hurry)
            if self.workers and self.redis.proc is not None and self.redis.proc.poll() is None:
                with contextlib.suppress(Exception):  # best effort: the next stack empties it anyway
                    self._forget_dead_commands()  # nothing of this job stays queued
            self.redis.stop()
            self.lock.release()
