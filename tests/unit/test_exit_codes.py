"""The CLI's exit 3 means Redis, the broker or the workers are unavailable, and nothing else."""

from __future__ import annotations

import pytest

from producer import cli
from producer.commands.console import EXIT_UNREACHABLE
from producer.connection import Unreachable
from producer.jobs import Stalled
from producer.redis_server import StackFailed


@pytest.mark.parametrize("exc", [Unreachable("redis down"), Stalled("no progress"), StackFailed("no start")])
def test_an_unavailable_stack_is_exit_3_with_its_reason(monkeypatch, capsys, exc):
    def status(settings, args):
        raise exc

    monkeypatch.setattr(cli, "cmd_status", status)
    assert cli.main(["status"]) == EXIT_UNREACHABLE
    assert str(exc) in capsys.readouterr().err


def test_any_other_runtime_error_is_a_bug_not_an_outage(monkeypatch):
    def status(settings, args):
        raise RuntimeError("a bug deep inside")

    monkeypatch.setattr(cli, "cmd_status", status)
    with pytest.raises(RuntimeError, match="a bug deep inside"):
        cli.main(["status"])
