"""Connecting the producer to Redis and the broker, failing fast and clearly when they are not there."""

from __future__ import annotations

import redis
from celery import Celery

from common.config.celery_conf import celery_conf
from common.config.redis_urls import REDIS_PY_SCHEMES, for_redis_py
from common.config.settings import Settings
from common.index.store import IndexStore
from common.signals import signal_set
from producer.commands.console import Unavailable


class Unreachable(Unavailable):
    """Redis or the broker did not answer: a clear message instead of a hang."""


def celery_app(settings: Settings) -> Celery:
    """A client-side app: sends tasks by name, never imports the worker code."""
    app = Celery("neardup-producer")
    app.conf.update(celery_conf(settings))
    return app


def _ping(url: str, timeout: float, what: str) -> None:
    """A Redis that accepts connections but never answers fails here within `timeout`, not 30 s."""
    probe = redis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, retry_on_timeout=False
    )
    try:
        probe.ping()
    except (redis.RedisError, OSError) as exc:
        raise Unreachable(f"cannot reach {what} at {safe_url(url)}: {exc}") from None
    finally:
        probe.close()


def redis_client(settings: Settings, timeout: float = 5.0) -> redis.Redis:
    url = settings.redis_url
    if url is None:  # embedded mode: its stack's settings carry the URL of the private redis-server
        raise ValueError("no Redis URL: embedded mode connects with the settings of its LocalStack")
    _ping(url, timeout, "Redis")
    return redis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=30, health_check_interval=25
    )


def index_store(client: redis.Redis, signals: signal_set.SignalSet = signal_set.DEFAULT) -> IndexStore:
    """The index as these signals write it (the store records and checks the set)."""
    return IndexStore.of(client, signals)


def safe_url(url: str | None) -> str:
    """The URL without its password, for messages and logs."""
    if not url or "@" not in url:
        return str(url)
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def broker_redis(settings: Settings, timeout: float = 5.0) -> redis.Redis | None:
    """A redis-py client on the broker's database (None when the broker is not Redis)."""
    from common.config.celery_conf import broker_and_backend

    broker, _ = broker_and_backend(settings)
    broker = for_redis_py(broker)
    if not broker.startswith(REDIS_PY_SCHEMES):
        return None
    _ping(broker, timeout, "the broker")
    return redis.Redis.from_url(broker, socket_connect_timeout=timeout, socket_timeout=30)
