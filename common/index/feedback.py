"""Review feedback on pairs of products: "not a duplicate" (never list them together again) and
"duplicate" (always group them in dedup).

Stored in the index Redis (so it persists with the index, AOF) as one hash: "<a>\\t<b>" (a < b, both
valid product ids, which never hold a tab) -> JSON {verdict, at}, plus a version counter bumped in the
same transaction, which query workers compare with the index version on every query (one MGET).

Dedup honours both verdicts with `constrained_groups`: confirmed pairs are joined first, unconditionally;
then the found pairs, best first, each joined unless that would put two products marked "not a
duplicate" into one group. So a rejected pair never shares a group, even through a third product.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import redis

from common.errors import BadRequest
from common.ids import check_product_id
from common.index import keys

NOT_DUPLICATE, DUPLICATE, CLEAR = "not_duplicate", "duplicate", "clear"
VERDICTS = (NOT_DUPLICATE, DUPLICATE)
_SEP = "\t"


def pair_of(a: object, b: object) -> tuple[str, str]:
    """The canonical (smaller, larger) pair of two valid, distinct product ids, else BadRequest."""
    a, b = check_product_id(a), check_product_id(b)
    if a == b:
        raise BadRequest("same_product", f"a pair needs two different products, got {a!r} twice")
    return (a, b) if a < b else (b, a)


def pair_key(pair: tuple[str, str]) -> str:
    return pair[0] + _SEP + pair[1]


@dataclass(frozen=True)
class Feedback:
    """Every verdict: pair -> verdict, with the version it was read at."""

    verdicts: Mapping[tuple[str, str], str] = field(default_factory=dict)
    version: int = 0

    @classmethod
    def from_hash(cls, raw: Mapping[bytes | str, bytes | str], version: int = 0) -> Feedback:
        verdicts: dict[tuple[str, str], str] = {}
        for k, v in raw.items():
            key = k.decode() if isinstance(k, bytes) else k
            a, _, b = key.partition(_SEP)
            try:
                verdict = json.loads(v).get("verdict")
            except (ValueError, AttributeError):
                continue  # a damaged entry is no verdict
            if a and b and verdict in VERDICTS:
                verdicts[(a, b)] = verdict
        return cls(verdicts, version)

    def pairs(self, verdict: str) -> list[tuple[str, str]]:
        return sorted(p for p, v in self.verdicts.items() if v == verdict)

    def counts(self) -> dict[str, int]:
        return {v: sum(1 for x in self.verdicts.values() if x == v) for v in VERDICTS}

    def exclusions(self) -> dict[str, frozenset[str]]:
        """productId -> the products never to list with it (both directions)."""
        out: dict[str, set[str]] = {}
        for (a, b), v in self.verdicts.items():
            if v == NOT_DUPLICATE:
                out.setdefault(a, set()).add(b)
                out.setdefault(b, set()).add(a)
        return {k: frozenset(v) for k, v in out.items()}

    def as_json(self) -> dict[str, list[list[str]]]:
        return {v: [list(p) for p in self.pairs(v)] for v in VERDICTS}


def banned_for(anchors: Iterable[str], exclusions: Mapping[str, frozenset[str]]) -> set[str]:
    """Products a query must not list: every product marked "not a duplicate" of one of its anchors
    (its own product, and every product whose photo has exactly the query's bytes)."""
    out: set[str] = set()
    for a in anchors:
        out |= exclusions.get(a, frozenset())
    return out


class _UnionFind:
    """Union-find over product ids where some roots must never join (rejected pairs)."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.banned: dict[str, set[str]] = {}  # root -> roots it must never join (kept for roots only)

    def find(self, x: str) -> str:
        parent = self.parent
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def ban(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.banned.setdefault(ra, set()).add(rb)
            self.banned.setdefault(rb, set()).add(ra)

    def union(self, a: str, b: str, force: bool) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb or (not force and rb in self.banned.get(ra, ())):
            return
        if ra > rb:
            ra, rb = rb, ra
        self.parent[rb] = ra
        merged = (self.banned.pop(ra, set()) | self.banned.pop(rb, set())) - {ra, rb}
        for other in merged:  # re-point the others' bans at the new root
            s = self.banned.setdefault(other, set())
            s.discard(rb)
            s.add(ra)
        if merged:
            self.banned[ra] = merged

    def groups(self) -> list[list[str]]:
        comps: dict[str, list[str]] = {}
        for x in list(self.parent):
            comps.setdefault(self.find(x), []).append(x)
        return [sorted(g) for g in comps.values() if len(g) > 1]


def constrained_groups(
    found: Sequence[tuple[str, str]], feedback: Feedback, universe: Iterable[str] | None = None
) -> list[list[str]]:
    """Groups (each sorted, two or more products) from the found pairs, best first, and the feedback.
    Confirmed pairs are joined first (among products in `universe`, when given); a found pair is
    skipped when it is rejected, or when joining it would put a rejected pair into one group."""
    allowed = set(universe) if universe is not None else None
    uf = _UnionFind()
    rejected = set(feedback.pairs(NOT_DUPLICATE))
    for a, b in feedback.pairs(DUPLICATE):
        if allowed is None or (a in allowed and b in allowed):
            uf.union(a, b, force=True)
    for a, b in rejected:
        uf.ban(a, b)
    for a, b in found:
        if (min(a, b), max(a, b)) not in rejected:
            uf.union(a, b, force=False)
    return uf.groups()


# -- Redis ------------------------------------------------------------------------------------------


def read(r: redis.Redis[bytes]) -> Feedback:
    """Every verdict and the feedback version, read together."""
    pipe = r.pipeline(transaction=True)
    pipe.hgetall(keys.FEEDBACK)
    pipe.get(keys.FEEDBACK_VERSION)
    raw, version = pipe.execute()
    return Feedback.from_hash(raw, int(version or 0))


def record(r: redis.Redis[bytes], pair: tuple[str, str], verdict: str) -> tuple[str | None, int]:
    """Set (or with CLEAR remove) the verdict on a pair; returns (the previous verdict, new version).
    One transaction: a worker that sees the new version also sees the verdict."""
    if verdict not in (*VERDICTS, CLEAR):
        raise BadRequest("bad_verdict", f"verdict must be one of {[*VERDICTS, CLEAR]}, got {verdict!r}")
    key = pair_key(pair)
    before = r.hget(keys.FEEDBACK, key)
    pipe = r.pipeline(transaction=True)
    if verdict == CLEAR:
        pipe.hdel(keys.FEEDBACK, key)
    else:
        pipe.hset(keys.FEEDBACK, key, json.dumps({"verdict": verdict, "at": round(time.time(), 3)}))
    pipe.incr(keys.FEEDBACK_VERSION)
    _, version = pipe.execute()
    previous = None
    if before is not None:
        try:
            previous = json.loads(before).get("verdict")
        except (ValueError, AttributeError):
            previous = None
    return previous, int(version)
