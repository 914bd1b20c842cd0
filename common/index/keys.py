"""Every Redis key name in one place. Never build key strings inline elsewhere."""

from __future__ import annotations

from collections.abc import Callable

PREFIX = "neardup:"

# Index: one hash per signal (productId -> packed bytes), written together with the version counter
# and the change stream in one MULTI so a reader never sees a half-written product.
VERSION = PREFIX + "index:version"
EPOCH = PREFIX + "index:epoch"  # random token set when an index is born: a reset index is never mistaken
CHANGES = PREFIX + "index:changes"
PRODUCTS = PREFIX + "index:products"  # productId -> JSON {url, at}
ROWS = PREFIX + "index:rows"  # productId -> row number in the columns
IDS = PREFIX + "index:ids"  # productIds joined by "\n", in row order
SIGNALS = PREFIX + "index:signals"  # JSON list of the scanned, verified and identity signals it holds
# emb: JSON {signal, threshold, ...} from `neardup calibrate --write`: the embedding stage's threshold.
EMBEDDING_CALIBRATION = PREFIX + "index:embedding_calibration"
# Row slots: removed products free their row, the next new product takes it, so churn does not grow
# the columns. IDS is rewritten only now and then; ROW_PATCH holds the rows changed since (row -> id,
# "" for a free row), so a bulk read is still two GETs and one small HGETALL.
ROW_COUNT = PREFIX + "index:row_count"  # row slots ever allocated (free ones included)
FREE_ROWS = PREFIX + "index:free_rows"  # list of free row numbers, reused first
ROW_PATCH = PREFIX + "index:row_patch"  # row -> productId ("" = free) changed since IDS was written
ADDED = PREFIX + "index:added"  # productId -> index version when it was first indexed (canonical order)
BLOB_NAMES = PREFIX + "index:blob_names"  # set of blob signals ever written (a remove clears them all)
# Review feedback on pairs ("a\tb", a < b) -> JSON {verdict, at}; its own version, read with the index's.
FEEDBACK = PREFIX + "feedback"
FEEDBACK_VERSION = PREFIX + "feedback:version"
FAILURES = PREFIX + "failures"  # productId -> JSON {stage, reason, error, url, attempts, at}


def signal(name: str) -> str:
    """Hash of productId -> packed signature for one versioned signal (e.g. "dhash64@1")."""
    return f"{PREFIX}sig:{name}"


def column(name: str) -> str:
    """String of 8 bytes per row for one scanned 64-bit signal."""
    return f"{PREFIX}col:{name}"


def attempts(task_id: str) -> str:
    """Delivery count of one task message (poison guard)."""
    return f"{PREFIX}attempts:{task_id}"


def _of_job(part: str) -> Callable[[str], str]:
    """The keys of one job: neardup:job:<job id>:<part>."""
    return lambda job_id: f"{PREFIX}job:{job_id}:{part}"


job_done = _of_job("done")  # set of item keys finished
job_failed = _of_job("failed")  # set of item keys failed
job_meta = _of_job("meta")
job_results = _of_job("results")  # hash of query key -> JSON result, gathered by the producer
# Set when the command that sent a job was interrupted: workers drop the job's queued tasks.
job_cancelled = _of_job("cancelled")


def dedup_pairs(job_id: str) -> str:
    return f"{PREFIX}dedup:{job_id}:pairs"


def worker_ready(hostname: str) -> str:
    """Set by a worker the producer started once it consumes (workers.boot): its readiness signal."""
    return f"{PREFIX}worker:{hostname}:ready"
