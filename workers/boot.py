"""Start one Celery worker without the `celery` command line, for the workers the producer starts.

`python -m celery -A workers.app worker` spends ~0.7 s importing its command line (click, click-repl,
prompt_toolkit, and every installed `celery.commands` plugin such as flower) before it imports the
app; this starts the same `app.Worker` directly. Two more things only a started worker needs:
- it announces itself in Redis once it consumes (`worker_ready`), so the producer polls one key
  instead of broadcasting pings that each wait out their timeout;
- with `--die-with-parent`, each prefork child gets SIGKILL when the worker's main process dies, so a
  worker killed with SIGKILL (or whose own parent died, see producer.children) leaves no orphans.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from common.index import keys

READY_TTL = 24 * 3600


def _announce_ready(hostname: str) -> None:
    import redis

    from common.config.settings import Settings

    url = Settings.from_env().redis_url
    if url is None:
        return
    with redis.Redis.from_url(url, socket_connect_timeout=5) as r:
        r.set(keys.worker_ready(hostname), os.getpid(), ex=READY_TTL)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.boot")
    parser.add_argument("--queues", required=True, help="comma-separated queue names")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--name", required=True, help="node name; %%h is the host name")
    parser.add_argument("--loglevel", default="WARNING")
    parser.add_argument("--die-with-parent", action="store_true")
    args = parser.parse_args(argv)

    from celery import signals
    from celery.utils.nodenames import default_nodename, host_format

    from workers.app import app

    # Imported on first use otherwise, once in each pool child, inside its first task: imagehash.phash
    # imports scipy.fftpack (~0.6 s, most of a first query), pipeline._pdq imports pdqhash. Imported
    # here, before the pool forks, every child starts with them.
    for module in ("scipy.fftpack", "pdqhash"):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    # The once-per-process checks that describe's fast paths agree with their references (~0.1 s),
    # made here too, so every child starts with their answers; one that fails here is retried by
    # each child's first describe (and fails there as an error for that image, not the worker).
    from common.signals import lanczos, pdq, pdq_fast

    for check in (lanczos.agrees, pdq.cv2_luma_agrees, pdq_fast.implementation):
        try:
            check()
        except Exception:  # noqa: BLE001 - a start-up shortcut must never stop the worker
            logging.getLogger(__name__).warning(
                "describe self-check %s failed", check.__name__, exc_info=True
            )

    hostname = host_format(default_nodename(args.name))

    @signals.worker_ready.connect(weak=False)
    def ready(**_: object) -> None:
        _announce_ready(hostname)

    if args.die_with_parent:

        @signals.worker_process_init.connect(weak=False)
        def child_dies_with_main(**_: object) -> None:
            from billiard.util import set_pdeathsig

            set_pdeathsig(signal.SIGKILL)

    worker = app.Worker(
        hostname=hostname,
        pool_cls="prefork",
        concurrency=args.concurrency,
        queues=args.queues.split(","),
        loglevel=args.loglevel,
        without_gossip=True,
        without_mingle=True,
        task_events=True,
        quiet=True,
    )
    worker.start()
    return int(worker.exitcode or 0)


if __name__ == "__main__":
    sys.exit(main())
