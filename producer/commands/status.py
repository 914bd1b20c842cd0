"""`neardup status` (the index, queues, workers and failures) and `neardup repair` (an inconsistent
index rebuilt from its intact products)."""

from __future__ import annotations

import argparse
from collections import Counter

from common.config.settings import Settings
from producer import jobs, lifecycle
from producer.commands.console import EXIT_FAILURES, EXIT_OK
from producer.session import open_session


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

        if (calibration := status_line(sess.r, settings)) is not None:
            print(calibration)
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
