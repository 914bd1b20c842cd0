"""The one guard every neardup task runs through. A task names its work and how to settle it (give
every product or query of the message its final answer with a given error); the guard decides when:

- a cancelled job (its command was interrupted: producer.jobs.cancel): the message is acked unrun, so
  an interrupted ingest's queued chunks never run inside the next command;
- poison: a message that killed its worker `max_deliveries` times is settled as `poison` and acked;
- another signal set in the index than this worker computes: settled with that ConfigError;
- the index Redis down: the message goes back to the queue (nothing would be recorded now);
- the soft time limit: settled as `time_limit` (answers already given are kept), then re-raised;
- anything else: settled as `internal_error`, so a job never waits for work that silently vanished.
A settle that itself fails is retried (requeued) only while the index Redis is down: any other
failure would repeat on every delivery, so it is logged and the message acked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded

from common.errors import BadRequest, ConfigError, NeardupError, error_result
from common.index import keys
from workers import index_cache

log = logging.getLogger(__name__)
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
T = TypeVar("T")


class TaskProblem(NeardupError):
    """Why the guard settled a message instead of letting its work answer."""

    def __init__(self, stage: str, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.stage = stage


def delivery_count(task_id: str | None) -> int:
    """How many times this message was delivered (a worker killed mid-task redelivers it)."""
    if not task_id:
        return 1
    r = index_cache.store().r
    key = keys.attempts(task_id)
    pipe = r.pipeline()
    pipe.incr(key)
    # Long enough to see every redelivery (visibility timeout x deliveries), short enough that a
    # million queries a day do not leave millions of keys behind.
    settings = index_cache.settings()
    pipe.expire(key, (settings.task_time_limit + 60) * (settings.max_deliveries + 1))
    return int(pipe.execute()[0])


def requeue_when_redis_is_down(exc: Exception) -> Reject:
    """A failed task is acked, and its products would be neither indexed nor recorded: when the index
    Redis is what failed, hand the message back instead (the broker may also be down; then it stays
    unacked and returns after the visibility timeout). The pause keeps a separate, healthy broker
    from spinning the message; redeliveries still count towards the poison guard."""
    log.warning("index Redis unavailable (%s); the message goes back to the queue", exc)
    time.sleep(1.0)
    return Reject(f"index Redis unavailable: {exc}", requeue=True)


class GuardedTask(Task):
    """Base class of every neardup task (`@app.task(base=GuardedTask, bind=True)`)."""

    problem_stage = "task"  # the `stage` of the guard's own problems in failure records and results

    def guarded(
        self, work: Callable[[], T], settle: Callable[[NeardupError], T], job_id: object = None
    ) -> T | None:
        try:
            if job_id is not None and job_cancelled(job_id):
                return None
            if delivery_count(self.request.id) > index_cache.settings().max_deliveries:
                return settle(
                    TaskProblem(self.problem_stage, "poison", "this task killed its worker repeatedly")
                )
            index_cache.check_signals()
            return work()
        except ConfigError as exc:  # this worker computes other signatures than the index holds
            return settle(exc)
        except REDIS_DOWN as exc:
            raise requeue_when_redis_is_down(exc) from None
        except SoftTimeLimitExceeded:
            settle(TaskProblem(self.problem_stage, "time_limit", "the task hit its soft time limit"))
            raise
        except Exception as exc:
            log.exception("%s failed", self.name)
            problem = TaskProblem(self.problem_stage, "internal_error", f"{type(exc).__name__}: {exc}")
            return self._settle_or_requeue(settle, problem)

    def answer(self, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Request/answer tasks (query, remove, feedback): the answer, or the guard's error result."""
        result = self.guarded(work, error_result)
        if result is None:  # only when even the error could not be built: still answer something
            return error_result(TaskProblem(self.problem_stage, "internal_error", "no answer"))
        return result

    @staticmethod
    def _settle_or_requeue(settle: Callable[[NeardupError], T], problem: NeardupError) -> T | None:
        try:
            return settle(problem)
        except REDIS_DOWN as err:  # cannot record now: hand the message back rather than lose it
            raise Reject(f"could not record the task's failure: {err}", requeue=True) from None
        except Exception:  # not transient: requeued, it would fail the same way forever
            log.exception("could not record the task's failure; the message is dropped")
            return None


def job_cancelled(job_id: object) -> bool:
    """True when the job's command was interrupted: its tasks still queued are dropped, not run."""
    if index_cache.store().r.exists(keys.job_cancelled(str(job_id))):
        log.info("job %s was cancelled: its task is dropped", job_id)
        return True
    return False


def refuse_positional(args: tuple[Any, ...]) -> dict[str, Any] | None:
    """Public tasks take keyword arguments only (their documented fields): an error result otherwise."""
    if not args:
        return None
    return error_result(BadRequest("bad_request", "pass the request as keyword arguments, not positional"))
