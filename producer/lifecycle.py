"""CLI commands that make the index follow the catalog: `neardup remove`, `neardup feedback`, and the
`--sync` / `--dry-run` step of `neardup ingest`. They write to the index Redis directly with the same
functions the `neardup.remove` / `neardup.feedback` tasks call (common.index.lifecycle), so they need no
worker; query workers pick the change up on their next query."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from common.config.settings import Settings
from common.index import feedback
from common.index.lifecycle import MAX_REMOVE, absent_from_catalog, feedback_request, remove_products
from common.index.store import IndexStore
from producer.catalog import CatalogReport
from producer.commands.console import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, say
from producer.session import Session, open_session

_USAGE_REASONS = {"bad_product_id", "same_product", "bad_type", "bad_verdict", "unknown_field"}


# -- remove -----------------------------------------------------------------------------------------


def remove_all(store: IndexStore, ids: list[str]) -> dict[str, Any]:
    """Remove in requests of at most MAX_REMOVE ids (each one atomic write); the counts summed."""
    total: dict[str, Any] = {"removed": 0, "not_indexed": 0, "bad": 0, "not_indexed_ids": [], "bad_ids": []}
    if not ids:  # nothing to remove (a --sync with the catalog whole): the index as it stands
        total["index_version"], total["index_size"] = store.version(), store.size()
    for start in range(0, len(ids), MAX_REMOVE):
        res = remove_products(ids[start : start + MAX_REMOVE], store)
        for k in ("removed", "not_indexed", "bad"):
            total[k] += res[k]
        total["not_indexed_ids"] += res["not_indexed_ids"]
        total["bad_ids"] += res["bad_ids"]
        total["index_version"], total["index_size"] = res["index_version"], res["index_size"]
    return total


def _say_removal(res: dict[str, Any], what: str = "remove") -> None:
    say(
        f"{what}: {res['removed']} removed, {res['not_indexed']} not indexed, {res['bad']} bad ids; "
        f"index holds {res['index_size']} products at version {res['index_version']}"
    )
    for pid in res["not_indexed_ids"][:10]:
        say(f"  {pid}: not_indexed")
    for bad in res["bad_ids"][:10]:
        say(f"  {bad['product_id']}: {bad['detail'] or bad['reason']}"[:200])  # the detail names the reason


def cmd_remove(settings: Settings, args: argparse.Namespace) -> int:
    ids = list(args.product_ids)
    if args.from_file:
        with open(args.from_file, encoding="utf-8") as f:
            ids += [line.strip() for line in f if line.strip() and not line.startswith("#")]
    if not ids:
        say("remove: give product ids (or --from-file FILE)")
        return EXIT_USAGE
    with open_session(settings, workers=False) as sess:
        res = remove_all(sess.store, ids)
    _say_removal(res)
    return EXIT_OK if res["not_indexed"] == 0 and res["bad"] == 0 else EXIT_FAILURES


# -- ingest --sync ----------------------------------------------------------------------------------


def sync_absent(sess: Session, report: CatalogReport) -> list[str]:
    """Indexed products the catalog does not list (a row it lists but cannot use still counts)."""
    return absent_from_catalog(sess.store.indexed_ids(), report.listed | {pid for pid, _ in report.items})


def check_sync(report: CatalogReport, args: argparse.Namespace) -> str | None:
    """Why a sync must not run (None when it may)."""
    if getattr(args, "dry_run", False) and not getattr(args, "sync", False):
        return "--dry-run previews a --sync: give both"
    if getattr(args, "sync", False) and not report.items:
        return "the catalog lists no usable product: --sync would empty the index (nothing done)"
    return None


def dry_run(settings: Settings, report: CatalogReport) -> int:
    """List what `ingest --sync` would remove (stdout, one id a line) and ingest; change nothing."""
    with open_session(settings, workers=False) as sess:
        absent = sync_absent(sess, report)
        fresh = sum(1 for ok in sess.store.up_to_date(report.items) if not ok)
        size = sess.store.size()
    for pid in absent:
        print(pid)
    sys.stdout.flush()  # the ids before the line that says "listed above", also when stdout is a pipe
    say(
        f"ingest --sync --dry-run: would ingest {fresh} products and remove {len(absent)} of {size} indexed "
        "products absent from the catalog (listed above); nothing changed"
    )
    _warn_malformed(report)
    return EXIT_OK


def sync_after_ingest(sess: Session, report: CatalogReport) -> None:
    absent = sync_absent(sess, report)
    res = remove_all(sess.store, absent)
    _say_removal(res, "ingest --sync")
    _warn_malformed(report)


def _warn_malformed(report: CatalogReport) -> None:
    unreadable = sum(n for reason, n in report.skipped.items() if reason in ("malformed_row", "not_utf8"))
    if unreadable:
        say(
            f"  note: {unreadable} catalog rows could not be read: a product only on such a row counts as "
            "absent (check with --dry-run)"
        )


# -- feedback ---------------------------------------------------------------------------------------


def cmd_feedback(settings: Settings, args: argparse.Namespace) -> int:
    chosen = [
        (verdict, pair)
        for verdict, pair in (
            (feedback.NOT_DUPLICATE, args.not_duplicate),
            (feedback.DUPLICATE, args.duplicate),
            (feedback.CLEAR, args.clear),
        )
        if pair
    ]
    with open_session(settings, workers=False) as sess:
        if not chosen:  # no verdict given: list them all
            fb = feedback.read(sess.r)
            print(json.dumps(fb.as_json(), indent=1))
            return EXIT_OK
        verdict, pair = chosen[0]
        res = feedback_request({"product_ids": list(pair), "verdict": verdict}, sess.store)
    if not res["ok"]:
        err = res["error"]
        say(f"feedback: {err['detail'] or err['reason']}")  # the detail starts with the reason
        return EXIT_USAGE if err["reason"] in _USAGE_REASONS else EXIT_FAILURES
    a, b = res["pair"]
    now = res["verdict"] or "no verdict"
    was = res["previous"] or "no verdict"
    say(f"feedback: {a} / {b}: {now} (was {was}), feedback version {res['feedback_version']}")
    return EXIT_OK


def status_lines(sess: Session) -> list[str]:
    counts = feedback.read(sess.r).counts()
    return [
        f"feedback: {counts[feedback.NOT_DUPLICATE]} pairs marked not-duplicate, "
        f"{counts[feedback.DUPLICATE]} confirmed duplicate"
    ]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "remove",
        help="remove products from the index (delisted); queries and dedup never list them again",
        description="Remove products from the index: every signature, blob and record, in one atomic "
        "write per 10,000 ids. Query workers drop them before their next answer. Exit 1 when some ids "
        "were not indexed or not valid (each listed).",
    )
    p.add_argument("product_ids", nargs="*", help="product ids to remove")
    p.add_argument("--from-file", default=None, help="a file of product ids, one a line")
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser(
        "feedback",
        help="mark a pair not-duplicate (never listed together again) or duplicate (always grouped)",
        description="Review feedback on a pair of indexed products, kept in the index Redis. "
        "--not-duplicate: queries between them (by id or by a photo with the exact bytes of one) and "
        "dedup never list the pair again, nor group them. --duplicate: dedup always groups them. "
        "--clear: forget the verdict. With no option: list every verdict as JSON.",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--not-duplicate", nargs=2, metavar=("A", "B"), help="A and B are different products")
    group.add_argument("--duplicate", nargs=2, metavar=("A", "B"), help="A and B are the same product")
    group.add_argument("--clear", nargs=2, metavar=("A", "B"), help="forget the verdict on A and B")
    p.set_defaults(func=cmd_feedback)


def add_sync_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sync",
        action="store_true",
        help="after the ingest, remove every indexed product the catalog does not list (count reported)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="with --sync: list what would be removed (stdout) and ingested, and change nothing",
    )
