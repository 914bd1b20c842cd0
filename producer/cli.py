"""The `neardup` command.

Exit codes: 0 everything done; 1 done, but some products or queries failed (listed);
2 bad usage, input or configuration; 3 Redis, broker or workers unreachable or stalled;
128 + signal number when stopped by SIGINT (130), SIGTERM (143) or SIGHUP (129).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.config.settings import Settings
from common.errors import ConfigError, NeardupError
from producer import jobs, lifecycle, stop_signals
from producer.catalog import CatalogError, CatalogReport, read_catalog
from producer.datadir_lock import DataDirBusy
from producer.query_inputs import exclude_own_photos, query_specs
from producer.results import detailed_shape, original_shape, write_json_atomic
from producer.session import Session, open_session

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
DEFAULT_OUTPUT = "near_duplicate_image.json"


def say(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


# -- query inputs --------------------------------------------------------------------------------


# -- commands -----------------------------------------------------------------------------------


def check_output(path: str) -> None:
    """Refuse an output path that cannot be written before any work is done (not after: the results
    would be lost)."""
    out = Path(path)
    if out.is_dir():
        raise ConfigError("bad_output", f"output {path} is a directory: name a file")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError("bad_output", f"output {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError("bad_output", f"output {path}: folder {parent} is not writable")
    if out.exists() and not os.access(out, os.W_OK):
        raise ConfigError("bad_output", f"output {path} is not writable")


def _report_catalog(report: CatalogReport) -> None:
    say(f"catalog: {report.summary()}")
    for note in report.notes:
        say(f"  note: {note}")
    for reason, examples in sorted(report.examples.items()):
        say(f"  {reason}: e.g. {', '.join(examples)}")


def _roots_of(report: CatalogReport) -> list[Path]:
    """Folders holding a local catalog's images: embedded workers may read them."""
    return sorted({Path(url).parent for _, url in report.items if "://" not in url})


def do_ingest(sess: Session, report: CatalogReport, args: argparse.Namespace) -> int:

    started = time.monotonic()
    job_id, sent, skipped = jobs.enqueue_ingest(
        sess.app, sess.store, report.items, sess.settings.ingest_chunk, force=args.force
    )
    if skipped:
        say(f"ingest: {skipped} products already indexed (use --force to redo them)")
    state = jobs.wait(
        sess.r,
        job_id,
        sent,
        "ingest",
        sess.workers_alive,
        progress=not args.quiet,
        timeout=args.timeout,
        pending=sess.pending,
    )
    elapsed = time.monotonic() - started
    rate = sent / elapsed if elapsed > 0 else 0.0
    say(
        f"ingest: {state.done} indexed, {state.failed} failed in {elapsed:.1f} s ({rate:.1f} images/s); "
        f"index holds {sess.store.size()} products at version {sess.store.version()}"
    )
    if state.failed:
        failed = jobs.failed_items(sess.r, sess.store, job_id)
        by_reason = Counter(rec.get("reason", "unknown") for rec in failed.values())
        say("  failures by reason: " + ", ".join(f"{r}={n}" for r, n in by_reason.most_common()))
        for pid, rec in list(failed.items())[:10]:
            say(f"  {pid}: {rec.get('stage')} {rec.get('error') or rec.get('reason')}"[:200])
    return EXIT_FAILURES if state.failed else EXIT_OK


def do_query(
    sess: Session, specs: list[dict], args: argparse.Namespace, origins: dict[str, Path] | None = None
) -> int:

    exclude_own_photos(sess.store, specs, origins or {})
    for spec in specs:
        if args.preset:
            spec["preset"] = args.preset
        if args.max_distance is not None:
            spec["max_distance"] = args.max_distance
        if args.details:
            spec["details"] = True
    started = time.monotonic()
    job_id = jobs.enqueue_queries(sess.app, sess.r, specs)
    jobs.wait(
        sess.r,
        job_id,
        len(specs),
        "query",
        sess.workers_alive,
        progress=not args.quiet,
        timeout=args.timeout,
        pending=sess.pending,
    )
    results = jobs.gather(sess.r, job_id)
    ordered = {s["key"]: results.get(s["key"], {"ok": False, "error": {"reason": "lost"}}) for s in specs}
    elapsed = time.monotonic() - started
    if args.details:
        fingerprint = {
            "preset": args.preset or sess.settings.preset,
            "max_distance": args.max_distance,
            "index_version": sess.store.version(),
            "index_size": sess.store.size(),
        }
        data = detailed_shape(ordered, fingerprint)
    else:
        data = original_shape(ordered)
    write_json_atomic(Path(args.output), data)
    errors = {k: r["error"] for k, r in ordered.items() if not r.get("ok")}
    sidecar = errors_path(Path(args.output))
    if errors and not args.details:  # --details carries them inline ("ok": false, "error")
        write_json_atomic(sidecar, errors)
    else:
        sidecar.unlink(missing_ok=True)  # never a stale list from an earlier run beside this output
    with_matches = sum(1 for r in ordered.values() if r.get("ok") and r["matches"])
    say(
        f"query: {len(specs)} queries in {elapsed:.1f} s, {with_matches} with matches, {len(errors)} errors "
        f"-> {args.output}"
    )
    for key, err in list(errors.items())[:10]:
        say(f"  {key}: {err.get('detail') or err.get('reason')}"[:200])
    if errors and not args.details:
        say(f"  errored queries are [] in {args.output}, like queries without a match: see {sidecar}")
    return EXIT_FAILURES if errors else EXIT_OK


def errors_path(output: Path) -> Path:
    """Where the plain output's errored queries are listed: the seed shape {"q": [[id, sim], ...]} has no
    room for an error without breaking its consumers, so they get [] there and their error here."""
    return output.with_name(f"{output.stem}.errors.json")


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    report = read_catalog(Path(args.catalog), tops_only=args.tops_only)
    _report_catalog(report)
    refused = lifecycle.check_sync(report, args)
    if refused:
        say(f"ingest: {refused}")
        return EXIT_USAGE
    if args.dry_run:
        return lifecycle.dry_run(settings, report)
    with open_session(settings, roots=_roots_of(report)) as sess:
        rc = do_ingest(sess, report, args)
        if args.sync:
            lifecycle.sync_after_ingest(sess, report)
        return rc


def cmd_query(settings: Settings, args: argparse.Namespace) -> int:
    check_output(args.output)
    specs, roots, origins = query_specs(args.images, args.product_id or [], settings.embedded)
    if not specs:
        say("query: nothing to query")
        return EXIT_USAGE
    with open_session(settings, roots=roots) as sess:
        return do_query(sess, specs, args, origins)


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    check_output(args.output)
    report = read_catalog(Path(args.catalog), tops_only=args.tops_only)
    _report_catalog(report)
    specs, roots, origins = query_specs(args.queries or [], args.product_id or [], settings.embedded)
    if not specs:  # no queries given: every catalog product against the rest, as the original did
        specs = [{"key": pid, "product_id": pid} for pid, _ in report.items]
    with open_session(settings, roots=[*_roots_of(report), *roots]) as sess:
        ingest_rc = do_ingest(sess, report, args)
        query_rc = do_query(sess, specs, args, origins)
    return max(ingest_rc, query_rc)


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


def cmd_dedup(settings: Settings, args: argparse.Namespace) -> int:
    from common.match import presets
    from producer.dedup import DEDUP_RADIUS, run_dedup

    check_output(args.output)
    preset = args.preset or settings.preset
    rule = presets.resolve(preset, args.max_distance, settings.min_similarity)
    explicit = args.max_distance is not None or settings.min_similarity is not None
    # The verified presets' dHash radius only bounds query candidates; dedup pairs need a tighter one.
    radius = rule.max_distance if explicit or not rule.verified else DEDUP_RADIUS
    with open_session(settings) as sess:
        shards = args.shards or max(1, 2 * (sess.settings.workers))
        result = run_dedup(
            sess,
            radius,
            shards,
            progress=not args.quiet,
            timeout=args.timeout,
            with_pairs=not args.no_pairs,
            preset=preset,
            canonical_rule=args.canonical,
        )
    write_json_atomic(Path(args.output), result)
    kind = "verified pairs" if result["verified"] else "pairs"
    say(
        f"dedup ({preset}): {result['products']} products, {result['pairs_found']} {kind} "
        f"within distance {radius}, "
        f"{result['groups_found']} groups ({result['products_in_groups']} products) in {result['seconds']} s "
        f"-> {args.output}"
    )
    if result.get("incomplete_shards"):
        say(
            f"dedup: shards {result['incomplete_shards']} could not run "
            f"({', '.join(result['incomplete_reasons'])}); their pairs are missing"
        )
        return EXIT_FAILURES
    return EXIT_OK


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from common.index import consistency

    with open_session(settings, workers=False, check_index=False) as sess:
        failures = sess.store.failures()
        replies = [] if sess.stack is not None else (sess.app.control.ping(timeout=1.0) or [])
        queues = jobs.queue_lengths(sess.broker) if sess.broker is not None else {}
        problems = consistency.check(sess.r, sess.store.scan_signals)
        print(f"index: {sess.store.size()} products, version {sess.store.version()}")
        for line in lifecycle.status_lines(sess):
            print(line)
        if problems:
            print(f"index INCONSISTENT: {'; '.join(problems)}\n  {consistency.REPAIR_HINT}")
        print("queues: " + ", ".join(f"{q}={n}" for q, n in queues.items()))
        print(
            f"workers alive: {len(replies)}"
            + (" (embedded: none run between commands)" if sess.stack else "")
        )
        for reply in replies:
            for name in reply:
                print(f"  {name}")
        by_reason = Counter(rec.get("reason", "unknown") for rec in failures.values())
        print(f"failures: {len(failures)}" + ("".join(f"\n  {r}: {n}" for r, n in by_reason.most_common())))
        from producer.calibrate import status_line  # emb: the model and its calibration, when one is set

        if (line := status_line(sess.r, settings)) is not None:
            print(line)
    return EXIT_FAILURES if problems else EXIT_OK


def cmd_repair(settings: Settings, args: argparse.Namespace) -> int:
    from common.index import consistency

    with open_session(settings, workers=False, check_index=False) as sess:
        problems = consistency.check(sess.r, sess.store.scan_signals)
        if not problems:
            print(f"index: consistent, {sess.store.size()} products; nothing to repair")
            return EXIT_OK
        report = consistency.repair(sess.r, sess.store.scan_signals, sess.store.blob_signals)
    print(f"index was inconsistent: {'; '.join(report.problems)}")
    print(
        f"repaired: {report.kept} products kept, {len(report.dropped)} dropped "
        "(ingest the catalog again to re-index them)"
        + (
            f": {', '.join(report.dropped[:10])}" + (" ..." if len(report.dropped) > 10 else "")
            if report.dropped
            else ""
        )
    )
    return EXIT_OK


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    from producer.report import write_report

    results = Path(args.results) if args.results else None
    groups = Path(args.groups) if args.groups else None
    if results is None and groups is None:  # neither given: the files the other commands write by default
        results = Path(DEFAULT_OUTPUT) if Path(DEFAULT_OUTPUT).is_file() else None
        groups = Path("near_duplicate_groups.json") if Path("near_duplicate_groups.json").is_file() else None
    if results is None and groups is None:
        say(f"report: give a results file ({DEFAULT_OUTPUT}) and/or --groups near_duplicate_groups.json")
        return EXIT_USAGE
    for folder in (args.images, args.queries):
        if folder and not Path(folder).is_dir():
            raise FileNotFoundError(f"not a folder: {folder}")
    for given in (results, groups):
        if given is not None and not given.is_file():
            raise FileNotFoundError(f"report input {given} is not a file")
    check_output(args.output)
    try:
        info = write_report(
            Path(args.output),
            results,
            groups,
            Path(args.images) if args.images else None,
            Path(args.queries) if args.queries else None,
            title=args.title,
            thumb_size=args.thumb_size,
        )
    except (ValueError, TypeError, KeyError, OSError) as exc:  # also json.JSONDecodeError, bad shapes
        say(f"report: {exc}")
        return EXIT_USAGE
    say(
        f"report: {info['queries']} queries, {info['matches']} matches, {info['groups']} groups "
        f"-> {args.output} ({info['bytes'] // 1024} KiB)"
    )
    return EXIT_OK


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


# -- argument parsing ---------------------------------------------------------------------------


def _preset(text: str) -> str:
    from common.match.presets import PRESETS

    if text not in PRESETS:
        raise argparse.ArgumentTypeError(
            f"unknown preset {text!r}; choose one of {', '.join(sorted(PRESETS))}"
        )
    return text


def _distance(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 64:
        raise argparse.ArgumentTypeError("a Hamming distance of 64 bits: 0 to 64")
    return value


THUMB_SIZES = "16 to 1024"


def _thumb_size(text: str) -> int:
    value = int(text)
    if not 16 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"thumbnail size in pixels: {THUMB_SIZES}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _seconds(text: str) -> float:
    import math

    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError("seconds: a finite number > 0")
    return value


def _common_job_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--timeout", type=_seconds, default=None, help="give up after this many seconds")


def _query_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", default=DEFAULT_OUTPUT, help=f"output JSON (default {DEFAULT_OUTPUT})")
    p.add_argument("--details", action="store_true", help="add distances, matching stage, index version")
    p.add_argument(
        "--preset", type=_preset, default=None, help="strict, balanced (default), loose or original"
    )
    p.add_argument("--max-distance", type=_distance, default=None, help="override the preset's dHash radius")
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
        type=_positive,
        default=None,
        help="worker processes (default NEARDUP_WORKERS; twice that with --queues ingest)",
    )
    p.add_argument("-n", "--name", default=None, help="worker node name")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("dedup", help="all near-duplicate pairs and groups in the whole index")
    p.add_argument("-o", "--output", default="near_duplicate_groups.json", help="output JSON")
    p.add_argument("--preset", type=_preset, default=None, help="its dHash radius is the pair threshold")
    p.add_argument("--max-distance", type=_distance, default=None, help="dHash radius (overrides the preset)")
    p.add_argument(
        "--shards", type=_positive, default=None, help="tasks to split the work into (default 2 per worker)"
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
    except RuntimeError as exc:  # also producer.connection.Unreachable and producer.jobs.Stalled
        say(f"neardup: {exc}")
        return EXIT_UNREACHABLE
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, stop_signals.Interrupted) else signal.SIGINT
        say(
            f"neardup: interrupted ({signal.Signals(signum).name}); run the same command again to resume "
            "(indexed products are skipped)"
        )
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
