"""`neardup flower` as a real Flower process against the session's Redis and workers: it sees the
workers and both queues, refuses anyone without the password, and refuses every control action."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import ROOT
from tests.support.processes import free_port, wait_until

pytestmark = pytest.mark.integration

AUTH = ("watcher", "s3cret-" + uuid.uuid4().hex[:8])


def flower_env(base_settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEARDUP_", "FLOWER_"))}
    return {**env, **base_settings.to_env(), **extra}


@pytest.fixture(scope="module")
def flower(base_settings, workers, tmp_path_factory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("flower") / "flower.log"
    env = flower_env(base_settings, NEARDUP_FLOWER_AUTH=f"{AUTH[0]}:{AUTH[1]}")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "producer.cli", "flower", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            return requests.get(f"{base}/healthcheck", timeout=1).ok
        except requests.ConnectionError:
            return False

    try:
        wait_until(up, timeout=30, what="Flower to listen")
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_the_password_is_not_on_the_command_line(flower: str) -> None:
    # Credentials travel in the environment, so `ps` never shows them
    found = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "flower" in found and AUTH[1] not in found


@pytest.mark.parametrize("path", ["/api/workers", "/api/queues/length", "/broker", "/"])
def test_without_credentials_is_401(flower: str, path: str) -> None:
    assert requests.get(flower + path, timeout=5).status_code == 401
    assert requests.get(flower + path, auth=(AUTH[0], "wrong"), timeout=5).status_code == 401


def test_workers_and_both_queues_are_visible(flower: str, workers) -> None:
    # Flower learns workers by broadcasting inspect requests: poll until ours has answered
    name = workers.name.replace("%h", os.uname().nodename)

    def listed() -> dict | None:
        body = requests.get(f"{flower}/api/workers?refresh=1", auth=AUTH, timeout=10).json()
        return body.get(name) if body.get(name, {}).get("active_queues") else None

    info = wait_until(listed, timeout=30, interval=0.5, what="Flower to list the session worker")
    assert {q["name"] for q in info["active_queues"]} == {"ingest", "query"}
    assert {"neardup.query", "neardup.ingest"} <= set(info["registered"])

    lengths = requests.get(f"{flower}/api/queues/length", auth=AUTH, timeout=10)
    assert lengths.status_code == 200
    assert {q["name"] for q in lengths.json()["active_queues"]} >= {"ingest", "query"}


@pytest.mark.parametrize(
    "path",
    [
        "/api/task/async-apply/neardup.query",
        "/api/task/send-task/neardup.query",
        f"/api/task/revoke/{uuid.uuid4()}",
        "/api/worker/pool/grow/nobody@nowhere",
    ],
)
def test_control_is_refused_read_only(flower: str, path: str) -> None:
    # Authenticated, yet every mutating endpoint says read-only (harmless targets, in case it did not)
    answer = requests.post(flower + path, auth=AUTH, json={"kwargs": {"product_id": "1"}}, timeout=10)
    assert answer.status_code == 403
    assert "read only" in answer.text.lower()


@pytest.mark.parametrize("auth", [None, "", "nocolon", "user:", ":pass", "a:b,c"])
def test_refuses_to_start_without_good_credentials(base_settings, auth: str | None) -> None:
    extra = {} if auth is None else {"NEARDUP_FLOWER_AUTH": auth}
    done = subprocess.run(
        [sys.executable, "-m", "producer.cli", "flower", "--port", str(free_port())],
        env=flower_env(base_settings, **extra),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "NEARDUP_FLOWER_AUTH" in done.stderr
