"""Every Redis key name in one place. Never build key strings inline elsewhere."""

from __future__ import annotations

PREFIX = "neardup:"

# Index: one hash per signal (productId -> packed bytes), written together with the version counter
# and the change stream in one MULTI so a reader never sees a half-written product.
VERSION = PREFIX + "index:version"
CHANGES = PREFIX + "index:changes"
PRODUCTS = PREFIX + "index:products"  # productId -> JSON {url, at, signals}
FAILURES = PREFIX + "failures"  # productId -> JSON {stage, reason, error, url, attempts, at}
ATTEMPTS = PREFIX + "attempts"  # task id -> delivery count (poison guard)


def signal(name: str) -> str:
    """Hash of productId -> packed signature for one versioned signal (e.g. "dhash64@1")."""
    return f"{PREFIX}sig:{name}"


def job_done(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:done"


def job_failed(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:failed"


def job_meta(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:meta"


def job_results(job_id: str) -> str:
    """Hash of query key -> JSON result, gathered by the producer."""
    return f"{PREFIX}job:{job_id}:results"


def dedup_pairs(job_id: str) -> str:
    return f"{PREFIX}dedup:{job_id}:pairs"
