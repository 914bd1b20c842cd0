"""`neardup dedup`: every near-duplicate pair and group in the whole index (producer.dedup runs it)."""

from __future__ import annotations

import argparse
from pathlib import Path

from common.config.settings import Settings
from producer.commands.console import EXIT_FAILURES, EXIT_OK, check_output, say
from producer.results import write_json_atomic
from producer.session import open_session


def cmd_dedup(settings: Settings, args: argparse.Namespace) -> int:
    from common.match import presets
    from producer.dedup import run_dedup

    check_output(args.output)
    preset = args.preset or settings.preset
    rule = presets.resolve(preset, args.max_distance, settings.min_similarity)
    explicit = args.max_distance is not None or settings.min_similarity is not None
    # The verified presets' dHash radius only bounds query candidates; dedup pairs need a tighter one.
    radius = rule.max_distance if explicit or not rule.verified else presets.FIXED.dedup_radius
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
