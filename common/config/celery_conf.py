"""Celery settings derived from neardup Settings, shared by the workers and by the producer's client."""

from __future__ import annotations

from typing import Any

from common.config.redis_urls import db_of, for_celery, with_db
from common.config.settings import Settings
from common.config.tasks import QUERY_QUEUE, QUEUE_OF


def broker_and_backend(settings: Settings) -> tuple[str, str]:
    """Index on the URL's db N, broker on N+1 and results on N+2 of the same server, unless told otherwise."""
    if settings.redis_url is None:
        raise ValueError("no Redis URL: embedded mode sets NEARDUP_REDIS_URL for the workers it starts")
    broker = settings.broker_url or with_db(settings.redis_url, db_of(settings.redis_url) + 1)
    backend = (
        with_db(broker, db_of(broker) + 1) if broker.startswith(("redis", "unix", "rediss")) else broker
    )
    # Celery's result backend reads unix sockets as redis+socket:// too.
    return for_celery(broker), for_celery(backend)


def celery_conf(settings: Settings) -> dict[str, Any]:
    broker, backend = broker_and_backend(settings)
    limit = settings.task_time_limit
    # The soft limit leaves the task time to record what it has not finished (see tasks.ingest).
    soft_limit = max(1, limit - min(30, max(1, limit // 5)))
    # Longer than any task can run, so an unacked message is only redelivered when its worker is gone
    # (a whole worker killed: its children's messages wait in the unacked set this long).
    visibility = limit + min(60, max(5, limit // 2))
    transport = {
        "visibility_timeout": visibility,
        # Sweep the unacked set every few seconds (kombu's default is interval 10 s x throttle 10),
        # so a message of a dead worker is back in its queue soon after its visibility timeout.
        "unacked_restore_interval": max(1, min(10, visibility // 5)),
        "unacked_restore_throttle": 1,
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
        "health_check_interval": 25,
        "retry_on_timeout": True,
    }
    return {
        "broker_url": broker,
        "result_backend": backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": limit,
        "task_soft_time_limit": soft_limit,
        # A task killed at the hard limit is requeued, not acked: redelivered, it meets the poison
        # guard (workers.guard.delivery_count) and ends recorded as failed instead of silently lost.
        "task_acks_on_timeout": False,
        "broker_transport_options": transport,
        "result_backend_transport_options": {
            "socket_timeout": 30,
            "socket_connect_timeout": 5,
            "health_check_interval": 25,
            "retry_on_timeout": True,
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 5,
        "result_expires": 3600,
        "task_default_queue": QUERY_QUEUE,
        "task_routes": {name: {"queue": queue} for name, queue in QUEUE_OF.items()},
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "worker_hijack_root_logger": False,
        "broker_connection_max_retries": 10,
    }
