"""The producer fails fast and clearly when Redis is not there or does not answer."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace

import pytest

from common.config.settings import Settings
from producer.connection import Unreachable, redis_client, safe_url


def test_a_silent_server_is_reported_within_the_timeout():
    # Given a TCP server that accepts connections and never answers (a hung Redis)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True).start()
    settings = replace(Settings.from_env({}), redis_url=f"redis://127.0.0.1:{server.getsockname()[1]}/0")

    # When the producer connects, Then it gives up clearly within about the timeout, not 30 s
    started = time.monotonic()
    with pytest.raises(Unreachable, match="cannot reach Redis"):
        redis_client(settings, timeout=0.5)
    assert time.monotonic() - started < 3
    server.close()


def test_passwords_never_reach_messages():
    assert safe_url("redis://:s3cret@host:6379/0") == "redis://***@host:6379/0"
    assert "s3cret" not in safe_url("redis://user:s3cret@host/1")
