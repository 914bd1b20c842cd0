"""Whole-inventory dedup: all pairs within radius r over N hashes, and the groups they form.

Ours (common.index.allpairs: k-of-m pigeonhole, packed-key sorts, exact duplicates collapsed, owner rule so
shards are disjoint) on one core and on 2 processes over shards, against peers in the same run:
FAISS IndexBinaryMultiHash range search of every hash (a sample of queries timed against the full
index, extrapolated linearly to N queries; said in the table) and a plain k-of-m sort-join (argsort
per combo, global unique of pairs). Answers checked equal to the peers' (and to brute force when N
is small).

    python benchmarks/bench_dedup.py --sizes 100000,1000000,10000000
    python benchmarks/bench_dedup.py --quick
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np
from _common import clustered_hashes, machine, parse_sizes, planted_hashes, random_hashes, table

from common.index import allpairs

_SHARED: np.ndarray | None = None  # the hashes, inherited by forked workers (never pickled)


def inventory(kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
    if kind == "clustered":
        return clustered_hashes(rng, n)
    h = planted_hashes(rng, n)
    # A crowd: 0.05 % of the catalog shares one placeholder image, plus scattered exact copies.
    crowd = rng.choice(n, n // 2000, replace=False)
    h[crowd] = random_hashes(rng, 1)[0]
    copies = rng.choice(n, n // 100, replace=False)
    h[copies] = h[rng.integers(0, n, len(copies))]
    return h


def _shard_job(args: tuple[int, allpairs.Shard]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    radius, shard = args
    return allpairs.pairs_for_shard(_SHARED, radius, shard)


def run_sharded(hashes: np.ndarray, radius: int, processes: int, shards: int):
    global _SHARED
    _SHARED = hashes
    plan = allpairs.shard_plan(shards, radius, len(hashes))
    with mp.get_context("fork").Pool(processes) as pool:
        parts = pool.map(_shard_job, [(radius, s) for s in plan], chunksize=1)
    _SHARED = None
    return tuple(np.concatenate(p) for p in zip(*parts, strict=True))


def plain_sort_join(hashes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """The straightforward k-of-m join: argsort per combo, verify, global unique of pair keys."""
    cfg = allpairs.choose_config(radius, len(hashes))
    from common.index.hamming import block_layout

    widths, shifts = block_layout(cfg.m)
    n = len(hashes)
    keys_out = []
    for combo in cfg.combos:
        key = np.zeros(n, dtype=np.uint64)
        for b in combo:
            key = (key << np.uint64(widths[b])) | (
                (hashes >> np.uint64(shifts[b])) & np.uint64((1 << widths[b]) - 1)
            )
        order = np.argsort(key, kind="stable")
        ks, hs = key[order], hashes[order]
        t = 1
        active = np.flatnonzero(ks[1:] == ks[:-1])
        while len(active):
            ok = np.bitwise_count(hs[active] ^ hs[active + t]) <= radius
            a, b = order[active[ok]], order[active[ok] + t]
            keys_out.append(np.minimum(a, b) * n + np.maximum(a, b))
            t += 1
            active = active[active + t < n]
            active = active[ks[active + t] == ks[active]]
    k = np.unique(np.concatenate(keys_out)) if keys_out else np.zeros(0, dtype=np.int64)
    return k // n, k % n


def faiss_multihash_per_query(hashes: np.ndarray, radius: int, sample: int) -> float:
    import faiss

    faiss.omp_set_num_threads(1)
    codes = np.ascontiguousarray(hashes).view(np.uint8).reshape(-1, 8)
    index = faiss.IndexBinaryMultiHash(64, 4, 16)
    index.nflip = 1 if radius < 8 else 2  # exact: 4 * (nflip + 1) > radius
    index.add(codes)
    q = codes[np.random.default_rng(0).integers(0, len(codes), sample)]
    t0 = time.perf_counter()
    index.range_search(q, radius + 1)
    return (time.perf_counter() - t0) / sample


def pair_set(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    return np.sort(i.astype(np.int64) * n + j)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000,10000000")
    ap.add_argument("--radius", type=int, default=6)
    ap.add_argument("--data", default="planted,clustered")
    ap.add_argument(
        "--clustered-max", type=int, default=300_000, help="largest clustered N (pairs grow ~N^2)"
    )
    ap.add_argument(
        "--peers-max", type=int, default=1_000_000, help="largest N for the sort-join and FAISS peers"
    )
    ap.add_argument("--faiss-sample", type=int, default=2000)
    ap.add_argument("--shards", type=int, default=8, help="shards for the 2-process run")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.clustered_max, args.faiss_sample = "20000,100000", 100_000, 300
    r = args.radius
    print(machine())
    print(f"# radius {r}; planted = uniform + 2% near copies + a 0.05% placeholder crowd + 1% exact copies")
    rows = []
    for kind in args.data.split(","):
        for n in parse_sizes(args.sizes):
            if kind == "clustered" and n > args.clustered_max:
                continue
            rng = np.random.default_rng(n)
            h = inventory(kind, rng, n)
            cfg = allpairs.choose_config(r, n)
            t0 = time.perf_counter()
            i, j, d = allpairs.all_pairs(h, r, expand_duplicates=False)
            t_one = time.perf_counter() - t0
            t0 = time.perf_counter()
            lab = allpairs.labels(n, i, j)
            t_groups = time.perf_counter() - t0
            n_groups = int(np.count_nonzero(np.bincount(lab, minlength=n) > 1))
            t0 = time.perf_counter()
            i2, j2, _ = run_sharded(h, r, 2, args.shards)
            t_two = time.perf_counter() - t0
            assert np.array_equal(pair_set(i, j, n), pair_set(i2, j2, n)), "shards differ from the whole"
            t_join = t_faiss = float("nan")
            if n <= args.peers_max:
                t0 = time.perf_counter()
                pi, pj = plain_sort_join(h, r)
                t_join = time.perf_counter() - t0
                fi, fj, _ = allpairs.all_pairs(h, r, expand_duplicates=True)
                assert np.array_equal(pair_set(fi, fj, n), pair_set(pi, pj, n)), "differs from the sort-join"
                t_faiss = faiss_multihash_per_query(h, r, args.faiss_sample) * n
            if n <= 20_000:
                x = np.bitwise_count(h[:, None] ^ h[None, :]) <= r
                bi, bj = np.nonzero(np.triu(x, 1))
                fi, fj, _ = allpairs.all_pairs(h, r, expand_duplicates=True)
                assert np.array_equal(pair_set(fi, fj, n), pair_set(bi, bj, n)), "differs from brute force"
            rows.append(
                [
                    kind,
                    n,
                    f"m={cfg.m},k={cfg.k}",
                    len(i),
                    n_groups,
                    t_one,
                    t_groups,
                    t_two,
                    t_one / t_two,
                    t_join,
                    t_faiss,
                    t_join / t_one,
                    t_faiss / t_one,
                ]
            )
            print(f"  done {kind} n={n:,}", flush=True)
    print("\nSeconds. pairs = compact form (identical hashes as a star from their first row).")
    print("faiss MH* = IndexBinaryMultiHash range search, per-query time on a sample x N (extrapolated).")
    print(
        table(
            [
                "data",
                "N",
                "config",
                "pairs",
                "groups",
                "1 core",
                "labels",
                "2 procs",
                "speed-up",
                "sort-join",
                "faiss MH*",
                "x join",
                "x faiss",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
