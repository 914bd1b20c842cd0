"""Tasks of a job whose command was interrupted are dropped, not run: the producer marks the job
cancelled (producer.jobs.cancel) before it stops, and a worker that takes one of the job's queued
messages afterwards acks it without work. Without this, an interrupted ingest's remaining chunks ran
inside the next command (the rows that a later `--tops-only` ingest had filtered out got indexed)."""

from __future__ import annotations

import logging

import redis

from common import keys

log = logging.getLogger(__name__)


def cancelled(r: redis.Redis, job_id: object) -> bool:
    """True when the job was cancelled; the task should return at once (its message is then acked)."""
    if r.exists(keys.job_cancelled(str(job_id))):
        log.info("job %s was cancelled: its task is dropped", job_id)
        return True
    return False
