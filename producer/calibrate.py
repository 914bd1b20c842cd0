"""`neardup calibrate LABELS.json`: the embedding stage's threshold from labelled queries.

The labelled queries (the devset's labels.json shape: {"queries": {file: {"matches": [...],
"ignore": [...]}}, "inventory": [...]}) run through the system like any query (embedded stack or
NEARDUP_REDIS_URL), with details, against the index as it is (ingest the inventory first). The
figures per stage and per threshold come from those answers (common.match.calibration); `--write` stores
the chosen threshold next to the index's signal set, where every query worker reads it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from common.config.settings import Settings
from common.index import embeddings
from common.match import calibration
from common.match.calibration import Labelled, Point
from common.signals import signal_set
from producer import jobs
from producer.commands import options
from producer.commands.console import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, say
from producer.session import open_session

GRID = (0.999, 0.995, 0.99, 0.98, 0.97, 0.95, 0.93, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5)


def add_parser(sub: argparse._SubParsersAction, common_job_args: Callable) -> None:
    p = sub.add_parser("calibrate", help="choose the embedding stage's threshold from labelled queries")
    p.add_argument("labels", help="labels.json: {queries: {file: {matches, ignore}}, inventory: [...]}")
    p.add_argument("--images", default=None, help="folder of the query images (default: LABELS' queries/)")
    p.add_argument("--target-precision", type=_share, default=0.98, help="of embedding-only matches")
    p.add_argument(
        "--min-matches", type=int, default=10, help="true embedding-only matches the threshold must have"
    )
    p.add_argument(
        "--held-out", type=_held_out, default=0.5, help="share of queries kept apart to check the choice"
    )

    other_stages = "preset of the other stages (default NEARDUP_PRESET)"
    p.add_argument("--preset", type=options.preset, default=None, help=other_stages)
    p.add_argument("--write", action="store_true", help="store the threshold with the index")
    common_job_args(p)
    p.set_defaults(func=cmd_calibrate)


def _share(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError("a precision in (0, 1]")
    return value


def _held_out(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError("a share in [0, 1)")
    return value


def read_labels(path: Path) -> dict:
    """The labelled queries, validated: ValueError with what is wrong."""
    data = json.loads(path.read_text())
    queries = data.get("queries") if isinstance(data, dict) else None
    if not isinstance(queries, dict) or not queries:
        raise ValueError(f"{path}: expected {{'queries': {{file: {{'matches': [...]}}}}}}")
    for name, q in queries.items():
        if not isinstance(q, dict) or not isinstance(q.get("matches", []), list):
            raise ValueError(f"{path}: query {name!r} needs a list of 'matches'")
        if not isinstance(q.get("ignore", []), list):
            raise ValueError(f"{path}: query {name!r}: 'ignore' must be a list")
    return data


def labelled_results(labels: dict, results: dict[str, dict]) -> tuple[list[Labelled], int]:
    """(answers as Labelled, how many queries failed). Matches of the embedding tier are left out:
    calibration simulates that tier itself, from the cosines of every scored candidate."""
    out, errors = [], 0
    for name, res in results.items():
        q = labels["queries"][name]
        if not res.get("ok"):
            errors += 1
            continue
        found = {m["product_id"]: m["stage"] for m in res["matches"] if m["stage"] != "embedding"}
        scored = {pid: float(c) for pid, c in (res.get("embedding") or {}).get("scored", [])}
        out.append(Labelled(name, frozenset(q["matches"]), frozenset(q.get("ignore", [])), found, scored))
    return out, errors


def _row(label: str, p: Point) -> str:
    figures = f"{p.emb_tp:9d} {p.emb_fp:9d} {p.emb_precision:13.3f} {p.precision:9.3f} {p.recall:7.3f}"
    return f"  {label:>9s} {figures}"


def _figures(p: Point) -> dict:
    return {
        "embedding_true": p.emb_tp,
        "embedding_false": p.emb_fp,
        "embedding_precision": round(p.emb_precision, 4),
        "precision": round(p.precision, 4),
        "recall": round(p.recall, 4),
    }


def report(results: list[Labelled], fit: list[Labelled], held: list[Labelled], args: argparse.Namespace):
    """Print the tables; return (chosen point on fit, the same threshold on the held-out half)."""
    n_true = sum(len(q.truth) for q in results)
    say(f"{'stage':>12s} {'true':>6s} {'false':>6s} {'precision':>10s} {'recall':>7s}")
    counts = calibration.stage_counts(results)
    if not counts:
        say(f"{'(none)':>12s}")
    for stage, (tp, fp) in counts.items():
        precision = tp / (tp + fp) if tp + fp else 1.0
        say(f"{stage:>12s} {tp:6d} {fp:6d} {precision:10.3f} {tp / max(n_true, 1):7.3f}")
    off = calibration.at(results, None)
    say(f"without the embedding stage: precision {off.precision:.3f}, recall {off.recall:.3f}")
    chosen = calibration.choose(fit, args.target_precision, args.min_matches)
    grid = sorted({*GRID, *([chosen.threshold] if chosen else [])}, reverse=True)
    say(f"embedding stage by threshold ({len(fit)} fit queries): embedding-only matches, then all stages")
    say(
        f"  {'threshold':>9s} {'emb true':>9s} {'emb false':>9s} {'emb precision':>13s} {'precision':>9s} "
        f"{'recall':>7s}"
    )
    for p in calibration.curve(fit, grid):
        say(
            _row(f"{p.threshold:.4f}", p)
            + ("  <- chosen" if chosen and p.threshold == chosen.threshold else "")
        )
    checked = calibration.at(held, chosen.threshold) if chosen and held else None
    return chosen, checked


def status_line(r, settings: Settings) -> str | None:
    """`neardup status`: the embedding model and whether its stage is on (None without a model)."""
    signal = signal_set.of(settings).embedding
    if signal is None:
        return None
    record = embeddings.read_calibration(r, signal)
    if record is None:
        return f"embedding: {signal}, not calibrated (a candidate source; its stage is off)"
    held = record.get("held_out") or record.get("fit") or {}
    return (
        f"embedding: {signal}, stage on at cosine >= {record['threshold']:.4f} "
        f"(calibrated for precision {record.get('target_precision')}: "
        f"{held.get('embedding_precision')} on {record.get('queries')} labelled queries)"
    )


def cmd_calibrate(settings: Settings, args: argparse.Namespace) -> int:
    signal = signal_set.of(settings).embedding
    if signal is None:
        say("calibrate: name the model first: NEARDUP_EMBEDDING_MODEL=/path/to/encoder.onnx")
        return EXIT_USAGE
    labels_path = Path(args.labels)
    try:
        labels = read_labels(labels_path)
    except (ValueError, OSError) as exc:  # json.JSONDecodeError is a ValueError
        say(f"calibrate: {exc}")
        return EXIT_USAGE
    images = Path(args.images) if args.images else labels_path.parent / "queries"
    present = [n for n in labels["queries"] if (images / n).is_file()]
    if not present:
        say(f"calibrate: none of the {len(labels['queries'])} labelled query images is in {images}")
        return EXIT_USAGE
    if len(present) < len(labels["queries"]):
        say(f"calibrate: {len(labels['queries']) - len(present)} labelled queries have no image in {images}")
    from producer.query_inputs import query_specs

    specs, roots, _ = query_specs([str(images / n) for n in present], [], settings.embedded)
    for spec in specs:
        spec.update(details=True, limit=10_000, **({"preset": args.preset} if args.preset else {}))
    with open_session(settings, roots=roots) as sess:
        inventory = list(labels.get("inventory") or [])
        if inventory:
            indexed = sum(sess.store.indexed(inventory))
            if indexed == 0:
                say(
                    f"calibrate: none of the {len(inventory)} labelled inventory products is indexed: "
                    "`neardup ingest` them first"
                )
                return EXIT_USAGE
            if indexed < len(inventory):
                say(f"calibrate: only {indexed} of {len(inventory)} inventory products are indexed")
        answers = jobs.run_queries(sess, specs, "calibrate", not args.quiet, args.timeout)
        results, errors = labelled_results(labels, {s["key"]: answers.get(s["key"], {}) for s in specs})
        fit_names, held_names = calibration.split([q.name for q in results], args.held_out)
        fit = [q for q in results if q.name in fit_names]
        held = [q for q in results if q.name in held_names]
        say(
            f"calibrate: {len(results)} labelled queries ({len(fit)} to fit, {len(held)} held out), "
            f"{errors} errors; model {signal}, target precision {args.target_precision}"
        )
        chosen, checked = report(results, fit, held, args)
        if chosen is None:
            say(
                f"calibrate: no threshold gives embedding-only matches a precision of "
                f"{args.target_precision} with {args.min_matches} or more true ones: the embedding stage "
                "stays off (nothing written)"
            )
            return EXIT_FAILURES
        if checked is not None:
            say("held out:" + _row(f"{chosen.threshold:.4f}", checked)[10:])
            if checked.emb_precision < args.target_precision:
                say(
                    f"calibrate: threshold {chosen.threshold:.4f} reaches {checked.emb_precision:.3f} on the "
                    "held-out queries, under the target: the embedding stage stays off (nothing written)"
                )
                return EXIT_FAILURES
        record = {
            "signal": signal,
            "threshold": chosen.threshold,
            "target_precision": args.target_precision,
            "min_matches": args.min_matches,
            "fit": _figures(chosen),
            "held_out": _figures(checked) if checked is not None else None,
            "queries": len(results),
            "labels": str(labels_path.resolve()),
            "at": round(time.time(), 3),
        }
        if args.write:
            embeddings.write_calibration(sess.r, record)
            say(f"calibrate: threshold {chosen.threshold:.4f} written; queries use it from now on")
        else:
            say(f"calibrate: threshold {chosen.threshold:.4f} (add --write to store it with the index)")
    return EXIT_OK
