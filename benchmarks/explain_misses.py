"""Why a seller-edit family's queries are missed: for each missed query, the stage that dropped it.

    python benchmarks/seller_edits.py /tmp/set --seed 1 --per-family 80 --families bgswap
    python benchmarks/explain_misses.py /tmp/set --family bgswap [--preset balanced] [--split tune]

Stages, in pipeline order (common.match.pipeline / confirm):
  candidate  the true product is not among the verified candidates (the hash scans' closest
             `max_candidates`, the word votes' `word_candidates`); its best distance per view is shown;
  orb        PDQ did not confirm it (distance per view shown) and no view's ORB fit passed
             (inliers, plausibility; a view whose candidate rows leave it out is marked);
  photo      an ORB fit passed, the photometric check refused it (luma share, chroma corr, ratio).
Each line ends with the query's transform. Describes are cached in OUT_DIR/.explain-cache.pkl
(delete it after changing describe).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_accuracy import MemoryIndex  # noqa: E402

from common.match import confirm, photometric, pipeline, presets, verify  # noqa: E402
from common.match.presets import Rule  # noqa: E402
from common.signals import signal_set  # noqa: E402
from common.signals.signal_set import (  # noqa: E402
    DHASH_BACKDROP,
    DHASH_CROPS,
    DHASH_MIRROR,
    DHASH_ROTATED,
    DHASH_TRIM,
    ORB,
    PDQ,
    PHASH,
    PHASH_BACKDROP,
    PHASH_MIRROR,
    THUMB,
)
from common.signals.signatures import unpack64  # noqa: E402


def _describe(job: tuple[str, bool]) -> dict[str, bytes]:
    from common.match import describe

    path, query = job
    sigs = describe.describe_bytes(Path(path).read_bytes(), 10**9, signal_set.from_env(), query=query)
    return dict(sigs.resolve().items()) if query else sigs  # type: ignore[attr-defined]


def load(folder: Path, names: list[str], workers: int) -> tuple[list[dict], list[dict]]:
    labels = json.loads((folder / "labels.json").read_text())
    # one cache per signal set: a describe of other signal versions is never read back
    versions = " ".join(signal_set.DEFAULT.blobs + signal_set.DEFAULT.scan)
    tag = hashlib.sha256(versions.encode()).hexdigest()[:12]
    cache = folder / f".explain-cache-{tag}.pkl"
    if cache.is_file():
        inv, qs = pickle.loads(cache.read_bytes())
        if set(qs) >= set(names):
            return inv, [qs[n] for n in names]
    jobs = [(str(folder / "inventory" / f"{p}.jpg"), False) for p in labels["inventory"]]
    with ProcessPoolExecutor(workers) as pool:
        inv = list(pool.map(_describe, jobs, chunksize=8))
        qd = list(pool.map(_describe, [(str(folder / "queries" / n), True) for n in names], chunksize=8))
    cache.write_bytes(pickle.dumps((inv, dict(zip(names, qd, strict=True)))))
    return inv, qd


def _distance(a: bytes, b: bytes) -> int:
    return int((unpack64(a) ^ unpack64(b)).bit_count())


def candidate_report(q: dict, index: MemoryIndex, rule: Rule, row: int) -> tuple[bool, str]:
    """Is `row` among the verified candidates; its distance per hash view."""
    snap = index.snap
    primary = pipeline.primary_key(q)
    q_dh = unpack64(q[primary])
    best, alt = pipeline._hash_candidates(q, snap, rule, primary, q_dh)
    dh = pipeline._RowDistances(snap.column(primary), q_dh)
    ranked = sorted(best, key=lambda r: (best[r], dh[r], snap.ids[r]))
    order = ranked[: rule.max_candidates]
    rotated = pipeline._rotated_candidates(q, snap, rule, primary, set(order))
    words = pipeline._word_candidates(q, snap, rule, {*order, *rotated})
    col = {k: snap.column(k) for k in snap.signal_keys}

    def d(column: str, qkey: str) -> str:
        if column not in col or qkey not in q:
            return "-"
        return str(int((int(col[column][row]) ^ unpack64(q[qkey])).bit_count()))

    views = {
        "dh": d(primary, primary),
        "ph": d(PHASH, PHASH),
        "trim": d(DHASH_TRIM, DHASH_TRIM),
        "crop": min((d(k, primary) for k in DHASH_CROPS), key=lambda s: int(s) if s != "-" else 99),
        "bd_dh": d(primary, DHASH_BACKDROP),
        "bd_ph": d(PHASH, PHASH_BACKDROP),
        "mi_dh": d(primary, DHASH_MIRROR),
        "rot": d(DHASH_CROPS[0], DHASH_ROTATED),
        "mi_ph": d(PHASH, PHASH_MIRROR),
    }
    cut = best[order[-1]] if order else None
    rank = ranked.index(row) if row in best else None
    text = " ".join(f"{k}={v}" for k, v in views.items())
    text += f" | hash rank {rank} (cut at d={cut}), rotated cand {row in rotated}, word cand {row in words}"
    text += f", backdrop view {row in alt['backdrop']}"
    return row in order or row in rotated or row in words, text


def verify_report(q: dict, index: MemoryIndex, rule: Rule, pid: str, row: int) -> tuple[str, str]:
    """The verification stage that refused `pid`, and what each view measured."""
    primary = pipeline.primary_key(q)
    _, alt = pipeline._hash_candidates(q, index.snap, rule, primary, unpack64(q[primary]))
    views = confirm._views(q, rule, alt)
    t_pdq = index.store[PDQ][pid]
    t_orb = index.store[ORB][pid]
    t_feat = verify.unpack(t_orb)
    t_thumb = photometric.unpack_thumb(index.store[THUMB][pid])
    parts, stage = [], "orb"
    for view in views:
        name = view.name or "straight"
        pdq = confirm._pdq_distance(view.pdq, t_pdq) if view.pdq else None
        qual = min(view.pdq[32], t_pdq[32]) if view.pdq else None
        line = f"{name}: pdq {pdq} (q{qual})"
        if view.orb is not None:
            v = verify.verify(view.features(), t_feat, min_inliers=rule.orb_min_inliers)
            allowed = view.rows is None or row in view.rows
            line += f" orb {v.inliers}/{v.good}{' plaus' if v.plausible else ' IMPLAUS'}"
            line += f"{' aff' if v.affine else ''}{'' if allowed else ' (not its row)'}"
            if v.passes(rule.orb_min_inliers) and v.model is not None:
                qt = view.thumb()
                if qt is not None:
                    p = photometric.photometric(
                        qt, t_thumb, v.model, views[0].features().size, t_feat.size, fine=view.fine()
                    )
                    need = rule.photo_min_affine if v.affine else rule.photo_min
                    line += f" photo luma {p.luma:.2f}/{need} chroma {p.chroma_corr:.2f}"
                    line += f" ratio {p.chroma_ratio:.2f}"
                    if allowed:
                        stage = "photo"
        parts.append(line)
    return stage, "; ".join(parts)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--family", default="bgswap")
    ap.add_argument("--preset", default="balanced")
    ap.add_argument("--split", default="", help="tune or held (default: both)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    labels = json.loads((args.folder / "labels.json").read_text())
    names = [
        n for n, q in labels["queries"].items()
        if q["family"] == args.family and (not args.split or q["split"] == args.split)
    ]  # fmt: skip
    inv, qs = load(args.folder, names, args.workers)
    index = MemoryIndex(labels["inventory"], inv)
    rule = presets.PRESETS[args.preset]
    stages: Counter[str] = Counter()
    for name, q in zip(names, qs, strict=True):
        lab = labels["queries"][name]
        pid = lab["matches"][0]
        found = {m.product_id for m in pipeline.find_matches(q, index.snap, rule, blobs=index.blobs)}
        if pid in found:
            stages["found"] += 1
            continue
        row = index.snap.rows[pid]
        is_cand, ctext = candidate_report(q, index, rule, row)
        if not is_cand:
            stage, vtext = "candidate", ""
        else:
            stage, vtext = verify_report(q, index, rule, pid, row)
        stages[stage] += 1
        print(f"{name} {pid} [{lab['split']}] {stage}: {ctext}\n    {vtext}  <{lab['transform']}>")
    print(f"\n{args.family} ({args.preset}, {args.split or 'all'}, {len(names)} queries): {dict(stages)}")


if __name__ == "__main__":
    main()
