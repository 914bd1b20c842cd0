"""The `neardup` command.

Exit codes: 0 everything done; 1 done, but some products or queries failed (listed);
2 bad usage, input or configuration; 3 Redis, broker or workers unreachable or stalled;
128 + signal number when stopped by SIGINT (130), SIGTERM (143) or SIGHUP (129).

This module builds the parser and maps errors to these exit codes (named in producer.commands.console);
what each command does is in producer.commands (and producer.lifecycle, producer.calibrate).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from common.config.settings import Settings
from common.errors import ConfigError, NeardupError
from producer import lifecycle, stop_signals
from producer.catalog import CatalogError
from producer.commands import options
from producer.commands.console import DEFAULT_OUTPUT, EXIT_UNREACHABLE, EXIT_USAGE, Unavailable, say
from producer.commands.dedup import cmd_dedup
from producer.commands.ingest import cmd_ingest
from producer.commands.query import cmd_query, cmd_run
from producer.commands.report import cmd_report
from producer.commands.status import cmd_repair, cmd_status
from producer.commands.worker import cmd_flower, cmd_worker
from producer.datadir_lock import DataDirBusy

# -- argument parsing ---------------------------------------------------------------------------

THUMB_SIZES = "16 to 1024"


def _thumb_size(text: str) -> int:
    value = int(text)
    if not 16 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"thumbnail size in pixels: {THUMB_SIZES}")
    return value


def _common_job_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--timeout", type=options.seconds, default=None, help="give up after this many seconds")


def _query_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", default=DEFAULT_OUTPUT, help=f"output JSON (default {DEFAULT_OUTPUT})")
    p.add_argument("--details", action="store_true", help="add distances, matching stage, index version")
    p.add_argument(
        "--preset", type=options.preset, default=None, help="strict, balanced (default), loose or original"
    )
    p.add_argument(
        "--max-distance", type=options.distance, default=None, help="override the preset's dHash radius"
    )
    p.add_argument("--product-id", action="append", help="query by a product id already indexed")


def _catalog_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "catalog",
        help="seed CSV (productId,imageUrlStr,categories), folder of <productId>.jpg, "
        "or a productId,url list",
    )
    p.add_argument("--tops-only", action="store_true", help="keep CSV rows whose leaf category has 'Tops'")
    p.add_argument("--force", action="store_true", help="re-download and re-hash already indexed products")


def canonical_rules() -> tuple[str, ...]:
    from common.index.canonical import RULES

    return RULES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neardup", description="Near-duplicate product photos, at catalog scale."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="download and hash a catalog into the index")
    _catalog_args(p)
    lifecycle.add_sync_args(p)
    _common_job_args(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("query", help="find near duplicates of images, URLs or indexed products")
    p.add_argument("images", nargs="*", help="image files, folders of images, or http(s) URLs")
    _query_args(p)
    _common_job_args(p)
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("run", help="ingest a catalog, then query, then write the JSON")
    _catalog_args(p)
    p.add_argument("--queries", nargs="+", help="query images/folders/URLs (default: every catalog product)")
    _query_args(p)
    _common_job_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("worker", help="run a Celery worker against NEARDUP_REDIS_URL")
    p.add_argument("--queues", default="ingest,query", help="comma-separated: ingest, query (default both)")
    p.add_argument(
        "-c",
        "--concurrency",
        type=options.positive,
        default=None,
        help="worker processes (default NEARDUP_WORKERS; twice that with --queues ingest)",
    )
    p.add_argument("-n", "--name", default=None, help="worker node name")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("dedup", help="all near-duplicate pairs and groups in the whole index")
    p.add_argument("-o", "--output", default="near_duplicate_groups.json", help="output JSON")
    p.add_argument(
        "--preset", type=options.preset, default=None, help="its dHash radius is the pair threshold"
    )
    p.add_argument(
        "--max-distance", type=options.distance, default=None, help="dHash radius (overrides the preset)"
    )
    p.add_argument(
        "--shards",
        type=options.positive,
        default=None,
        help="tasks to split the work into (default 2 per worker)",
    )
    p.add_argument("--no-pairs", action="store_true", help="write the groups only")
    p.add_argument(
        "--canonical",
        choices=canonical_rules(),
        default=None,
        help="which member of each group to name canonical (default NEARDUP_CANONICAL, earliest)",
    )
    _common_job_args(p)
    p.set_defaults(func=cmd_dedup)

    lifecycle.add_commands(sub)

    p = sub.add_parser("status", help="index size and version, queue lengths, workers, failures, feedback")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("repair", help="rebuild an inconsistent index from its intact products")
    p.set_defaults(func=cmd_repair)

    p = sub.add_parser("report", help="a self-contained HTML page of the matches and dedup groups")
    p.add_argument("results", nargs="?", help=f"query results JSON, either shape (default {DEFAULT_OUTPUT})")
    p.add_argument("--groups", default=None, help="near_duplicate_groups.json from `neardup dedup`")
    p.add_argument("--images", default=None, help="folder of inventory images <productId>.jpg")
    p.add_argument("--queries", default=None, help="folder of the query images")
    p.add_argument("-o", "--output", default="neardup_report.html", help="output HTML file")
    p.add_argument("--title", default="neardup report")
    p.add_argument(
        "--thumb-size", type=_thumb_size, default=128, help=f"thumbnail size in pixels ({THUMB_SIZES})"
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("flower", help="Flower (read-only, basic auth from NEARDUP_FLOWER_AUTH)")
    p.add_argument("--address", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5555)
    p.set_defaults(func=cmd_flower)

    from producer.calibrate import add_parser as add_calibrate  # emb: `neardup calibrate`

    add_calibrate(sub, _common_job_args)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    stop_signals.install()  # SIGTERM and SIGHUP unwind like Ctrl-C: the private stack is stopped
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        say(f"neardup: {exc.detail}")
        return EXIT_USAGE
    try:
        if settings.embedding_model is not None:  # emb: a bad model or no onnxruntime: one line, exit 2
            from common.signals.embedding import check_model

            check_model(settings.embedding_model)
        return args.func(settings, args)
    except (FileNotFoundError, DataDirBusy, CatalogError) as exc:
        say(f"neardup: {exc}")
        return EXIT_USAGE
    except NeardupError as exc:  # bad input or configuration: BadRequest (an id), ConfigError
        say(f"neardup: {exc}")
        return EXIT_USAGE
    except Unavailable as exc:  # Unreachable, Stalled, StackFailed; any other error is a bug: its traceback
        say(f"neardup: {exc}")
        return EXIT_UNREACHABLE
    except KeyboardInterrupt as exc:
        for stop in stop_signals.STOP_SIGNALS:  # the stack is down: a late second signal must not kill us
            signal.signal(stop, signal.SIG_IGN)
        signum = exc.signum if isinstance(exc, stop_signals.Interrupted) else signal.SIGINT
        say(f"neardup: interrupted ({signal.Signals(signum).name}); {_after_interrupt(args.command)}")
        return 128 + signum


def _after_interrupt(command: str) -> str:
    """What an interrupted command left, and how to go on."""
    if command in ("ingest", "run"):  # each chunk is written as it is indexed
        return "run the same command again to resume (indexed products are skipped)"
    if command in ("query", "dedup", "report"):  # their output is written whole, at the end
        return "no output was written; run the same command again"
    return "run the same command again"


if __name__ == "__main__":
    sys.exit(main())
