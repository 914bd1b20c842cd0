"""`neardup ingest`: a catalog downloaded and hashed into the index (and `--sync` / `--dry-run`)."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from common.config.settings import Settings
from producer import jobs, lifecycle
from producer.catalog import CatalogReport, read_catalog
from producer.commands.console import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, say
from producer.session import Session, open_session


def report_catalog(report: CatalogReport) -> None:
    say(f"catalog: {report.summary()}")
    for note in report.notes:
        say(f"  note: {note}")
    for reason, examples in sorted(report.examples.items()):
        say(f"  {reason}: e.g. {', '.join(examples)}")
    if not report.rows:  # not an error (a pipeline's empty delta), but rarely what a person meant
        say("  note: the catalog holds no rows: nothing to ingest")


def roots_of(report: CatalogReport) -> list[Path]:
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


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    report = read_catalog(Path(args.catalog), tops_only=args.tops_only)
    report_catalog(report)
    refused = lifecycle.check_sync(report, args)
    if refused:
        say(f"ingest: {refused}")
        return EXIT_USAGE
    if args.dry_run:
        return lifecycle.dry_run(settings, report)
    with open_session(settings, roots=roots_of(report)) as sess:
        rc = do_ingest(sess, report, args)
        if args.sync:
            lifecycle.sync_after_ingest(sess, report)
        return rc
