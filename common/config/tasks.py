"""Task names and queues: public API (other services send tasks by these names, without our code).
The Celery app, the producer, the client and the README's contract table all use this one module."""

from __future__ import annotations

INGEST_QUEUE = "ingest"
QUERY_QUEUE = "query"

INGEST = "neardup.ingest"
QUERY = "neardup.query"
QUERY_BATCH = "neardup.query_batch"
DEDUP_SHARD = "neardup.dedup_shard"
REMOVE = "neardup.remove"
FEEDBACK = "neardup.feedback"

QUEUE_OF: dict[str, str] = {
    INGEST: INGEST_QUEUE,
    QUERY: QUERY_QUEUE,
    QUERY_BATCH: QUERY_QUEUE,
    DEDUP_SHARD: QUERY_QUEUE,
    REMOVE: QUERY_QUEUE,
    FEEDBACK: QUERY_QUEUE,
}

# How long a job's bookkeeping (done/failed sets, results, notes) stays in Redis.
JOB_TTL = 7 * 24 * 3600
