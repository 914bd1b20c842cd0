from __future__ import annotations

from pathlib import Path

import pytest

from common.config.celery_conf import broker_and_backend, celery_conf
from common.config.redis_urls import for_celery, with_db
from common.config.settings import Settings, documented_variables
from common.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_embedded_and_safe():
    s = Settings.from_env({})
    assert s.embedded and s.allow_private_urls is False and s.file_roots == ()
    assert s.preset == "balanced"


def test_every_bad_value_is_listed_at_once():
    env = {
        "NEARDUP_WORKERS": "zero",
        "NEARDUP_PRESET": "nope",
        "NEARDUP_ALLOW_PRIVATE_URLS": "maybe",
        "NEARDUP_MAX_DISTANCE": "99",
    }
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    for name in env:
        assert name in err.value.detail


def test_similarity_and_distance_are_exclusive():
    with pytest.raises(ConfigError, match="set one"):
        Settings.from_env({"NEARDUP_MIN_SIMILARITY": "90", "NEARDUP_MAX_DISTANCE": "6"})


def test_settings_round_trip_through_the_environment(tmp_path):
    s = Settings.from_env(
        {
            "NEARDUP_REDIS_URL": "redis://h:1/0",
            "NEARDUP_FILE_ROOTS": str(tmp_path),
            "NEARDUP_ALLOW_PRIVATE_URLS": "yes",
            "NEARDUP_MAX_DISTANCE": "8",
        }
    )
    assert Settings.from_env(s.to_env()) == s


def test_readme_documents_every_variable():
    readme = (ROOT / "README.md").read_text()
    for name, _, _ in documented_variables():
        assert f"`{name}`" in readme, name


def test_redis_urls_for_unix_sockets_and_tcp():
    assert with_db("unix:///tmp/r.sock?db=0", 1) == "unix:///tmp/r.sock?db=1"
    assert for_celery("unix:///tmp/r.sock?db=1") == "redis+socket:///tmp/r.sock?virtual_host=1"
    assert with_db("redis://:pw@host:6379/0", 2) == "redis://:pw@host:6379/2"


def test_celery_is_json_only_with_late_acks_and_db_split():
    s = Settings.from_env({"NEARDUP_REDIS_URL": "redis://h:6379/3"})
    broker, backend = broker_and_backend(s)
    assert broker.endswith("/4") and backend.endswith("/5")
    conf = celery_conf(s)
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_transport_options"]["visibility_timeout"] > conf["task_time_limit"]
    assert conf["task_routes"]["neardup.ingest"]["queue"] == "ingest"
