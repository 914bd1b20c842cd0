"""`neardup query` and `neardup run` (ingest, then query): queries sent to the workers, their answers
written as JSON."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common.config.settings import Settings
from producer import jobs
from producer.catalog import read_catalog
from producer.commands.console import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, check_output, say
from producer.commands.ingest import do_ingest, report_catalog, roots_of
from producer.query_inputs import exclude_own_photos, query_specs
from producer.results import detailed_shape, original_shape, write_json_atomic
from producer.session import Session, open_session


def do_query(
    sess: Session, specs: list[dict], args: argparse.Namespace, origins: dict[str, Path] | None = None
) -> int:

    exclude_own_photos(sess.store, specs, origins or {})
    # The cut-off this command was given (--max-distance, else NEARDUP_MAX_DISTANCE or
    # NEARDUP_MIN_SIMILARITY) goes with every query, both keys, so a worker configured otherwise
    # answers with it, and --details reports what was applied.
    cutoff: tuple[int | None, float | None] | None = None
    if args.max_distance is not None:
        cutoff = (args.max_distance, None)
    elif (sess.settings.max_distance, sess.settings.min_similarity) != (None, None):
        cutoff = (sess.settings.max_distance, sess.settings.min_similarity)
    for spec in specs:
        if args.preset:
            spec["preset"] = args.preset
        if cutoff is not None:
            spec["max_distance"], spec["min_similarity"] = cutoff
        if args.details:
            spec["details"] = True
    started = time.monotonic()
    results = jobs.run_queries(sess, specs, "query", not args.quiet, args.timeout)
    ordered = {s["key"]: results.get(s["key"], {"ok": False, "error": {"reason": "lost"}}) for s in specs}
    elapsed = time.monotonic() - started
    if args.details:
        fingerprint = {
            "preset": args.preset or sess.settings.preset,
            "max_distance": cutoff[0] if cutoff else None,
            "min_similarity": cutoff[1] if cutoff else None,
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
    report_catalog(report)
    specs, roots, origins = query_specs(args.queries or [], args.product_id or [], settings.embedded)
    if not specs:  # no queries given: every catalog product against the rest, as the original did
        specs = [{"key": pid, "product_id": pid} for pid, _ in report.items]
    with open_session(settings, roots=[*roots_of(report), *roots]) as sess:
        ingest_rc = do_ingest(sess, report, args)
        query_rc = do_query(sess, specs, args, origins)
    return max(ingest_rc, query_rc)
