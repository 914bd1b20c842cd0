"""docker-compose.yml, Dockerfile and .env.example checked statically (no Docker engine needed), and
with `docker compose config` when a working compose client is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
WORKERS = ("worker-ingest", "worker-query")
REDISES = ("redis-index", "redis-broker")
REQUIRED_ENV = ("NEARDUP_REDIS_PASSWORD", "NEARDUP_BROKER_PASSWORD", "NEARDUP_FLOWER_AUTH")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def command_text(service: dict[str, Any]) -> str:
    cmd = service.get("command", "")
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


def test_the_five_services(services: dict[str, Any]) -> None:
    assert set(services) == {*REDISES, *WORKERS, "flower"}


def test_workers_are_one_image_with_different_queues(services: dict[str, Any]) -> None:
    ingest, query = (services[w] for w in WORKERS)
    assert ingest["image"] == query["image"] == services["flower"]["image"]
    assert ingest.get("build") == query.get("build") == "."
    assert command_text(ingest).startswith("neardup worker --queues ingest")
    assert command_text(query).startswith("neardup worker --queues query")


@pytest.mark.parametrize("name", WORKERS)
def test_workers_scale(services: dict[str, Any], name: str) -> None:
    # --scale needs no fixed container name and no host port to collide on
    assert "container_name" not in services[name]
    assert "ports" not in services[name]
    assert "hostname" not in services[name]


def test_no_container_names_anywhere(services: dict[str, Any]) -> None:
    assert not [n for n, s in services.items() if "container_name" in s]


@pytest.mark.parametrize("name", REDISES)
def test_redis_is_never_published_and_has_a_password_from_the_environment(
    services: dict[str, Any], name: str
) -> None:
    svc = services[name]
    assert "ports" not in svc and "network_mode" not in svc
    cmd = command_text(svc)
    assert "--requirepass" in cmd
    # The password is never written in the file: it comes from a required variable (${X:?message}).
    password_var = "NEARDUP_REDIS_PASSWORD" if name == "redis-index" else "NEARDUP_BROKER_PASSWORD"
    assert re.fullmatch(r"\$\{" + password_var + r":\?[^}]+\}", svc["environment"]["REDIS_PASSWORD"])
    assert '"$$REDIS_PASSWORD"' in cmd  # expanded by the container's shell, not written in the file
    assert "noeviction" in cmd


def test_index_redis_persists_with_aof_everysec(services: dict[str, Any], compose: dict[str, Any]) -> None:
    cmd = command_text(services["redis-index"]).split()
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert cmd[cmd.index("--appendfsync") + 1] == "everysec"
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "noeviction"
    # and on a named volume, so the AOF outlives the container
    volume = services["redis-index"]["volumes"][0].split(":")
    assert volume[1] == "/data" and volume[0] in compose["volumes"]


def test_every_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        check = svc.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), name


def test_neardup_services_start_after_healthy_redis(services: dict[str, Any]) -> None:
    for name in (*WORKERS, "flower"):
        deps = services[name]["depends_on"]
        assert set(REDISES) <= set(deps), name
        assert all(d["condition"] == "service_healthy" for d in deps.values()), name


def test_workers_reach_both_redises_with_passwords(services: dict[str, Any]) -> None:
    for name in (*WORKERS, "flower"):
        env = services[name]["environment"]
        assert env["NEARDUP_REDIS_URL"].startswith("redis://:${NEARDUP_REDIS_PASSWORD:?")
        assert env["NEARDUP_REDIS_URL"].endswith("@redis-index:6379/0")
        assert env["NEARDUP_BROKER_URL"].startswith("redis://:${NEARDUP_BROKER_PASSWORD:?")
        assert env["NEARDUP_BROKER_URL"].endswith("@redis-broker:6379/0")


def test_flower_is_authenticated_read_only_and_local(services: dict[str, Any]) -> None:
    flower = services["flower"]
    assert command_text(flower).startswith("neardup flower")  # which refuses to run without auth
    assert re.fullmatch(r"\$\{NEARDUP_FLOWER_AUTH:\?[^}]+\}", flower["environment"]["NEARDUP_FLOWER_AUTH"])
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    from producer.flower import flower_command

    assert "--read_only=true" in flower_command()


def test_env_example_names_every_required_variable() -> None:
    text = (ROOT / ".env.example").read_text()
    for var in REQUIRED_ENV:
        assert re.search(rf"^{var}=\S+", text, re.M), var
        assert f"${{{var}:?" in COMPOSE.read_text(), var


def test_dockerfile_installs_the_package_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^RUN pip install \.", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    # what `pip install .` needs is copied and not excluded by .dockerignore
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    copied = " ".join(re.findall(r"^COPY (.+)$", text, re.M)).split()
    for needed in ("pyproject.toml", "README.md", "common", "workers", "producer"):
        assert needed in copied and needed not in ignored, needed


def _compose_client() -> list[str] | None:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        probe = subprocess.run([*cmd, "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return cmd
    return None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    client = _compose_client()
    if client is None:
        pytest.skip("no working `docker compose` client (it needs no engine, but it must be installed)")
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(tmp_path)}
    # Without the required variables, compose refuses with the message from ${VAR:?message}
    missing = subprocess.run(
        [*client, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True, env=env
    )
    assert missing.returncode != 0 and "NEARDUP_" in missing.stderr
    # With them, the file is valid and the services resolve (YAML from compose v1 and v2 alike)
    values = {"NEARDUP_REDIS_PASSWORD": "a1", "NEARDUP_BROKER_PASSWORD": "b2", "NEARDUP_FLOWER_AUTH": "u:p"}
    done = subprocess.run(
        [*client, "-f", str(COMPOSE), "config"], capture_output=True, text=True, env={**env, **values}
    )
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)["services"]
    assert resolved["worker-ingest"]["environment"]["NEARDUP_REDIS_URL"] == "redis://:a1@redis-index:6379/0"
    assert resolved["flower"]["environment"]["NEARDUP_FLOWER_AUTH"] == "u:p"
    port = resolved["flower"]["ports"][0]
    # v1 prints the short form, v2 the long one: either way bound to the host's loopback only
    assert port.startswith("127.0.0.1:5555:5555") if isinstance(port, str) else port["host_ip"] == "127.0.0.1"
    assert not any("ports" in resolved[name] for name in (*WORKERS, *REDISES))
