"""`neardup worker` and `neardup flower`: the process replaced by a Celery worker or by Flower."""

from __future__ import annotations

import argparse
import os

from common.config.settings import Settings
from producer.commands.console import EXIT_OK, EXIT_USAGE, say


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    if settings.embedded:
        say("worker: set NEARDUP_REDIS_URL to the Redis this worker should join")
        return EXIT_USAGE
    from producer.local import worker_command

    name = args.name or f"neardup-{os.getpid()}@%h"
    queues = args.queues.split(",")
    # Ingest processes wait ~100 ms per task on image hosts: twice as many as cores keeps the CPU busy
    # (measured in benchmarks/bench_ingest.py). Query processes are CPU-bound and hold an index copy.
    concurrency = args.concurrency or (2 * settings.workers if queues == ["ingest"] else settings.workers)
    cmd = worker_command(queues, concurrency, name, args.loglevel)
    os.execv(cmd[0], cmd)
    return EXIT_OK  # pragma: no cover


def cmd_flower(settings: Settings, args: argparse.Namespace) -> int:
    from producer.flower import FlowerConfigError, flower_command, flower_environment

    if settings.embedded:
        say("flower: set NEARDUP_REDIS_URL to the Redis the workers use")
        return EXIT_USAGE
    try:
        env = flower_environment(os.environ)
    except FlowerConfigError as exc:
        say(f"flower: {exc}")
        return EXIT_USAGE
    cmd = flower_command(args.address, args.port)
    os.execve(cmd[0], cmd, env)
    return EXIT_OK  # pragma: no cover
