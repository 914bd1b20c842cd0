"""What an interrupted command says it left: only ingest and run resume; a query's output is written whole."""

from __future__ import annotations

import signal

import pytest

from producer import cli, stop_signals


@pytest.fixture(autouse=True)
def _handlers_restored():
    """An interrupted main ignores further stop signals: not in the test process after the test."""
    saved = {s: signal.getsignal(s) for s in stop_signals.STOP_SIGNALS}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.parametrize(
    ("argv", "name", "hint"),
    [
        (["ingest", "catalog.csv"], "cmd_ingest", "to resume (indexed products are skipped)"),
        (["query", "q.jpg"], "cmd_query", "no output was written; run the same command again"),
        (["dedup"], "cmd_dedup", "no output was written; run the same command again"),
        (["status"], "cmd_status", "interrupted (SIGINT); run the same command again"),
    ],
)
def test_the_interrupt_hint_fits_the_command(monkeypatch, capsys, argv, name, hint) -> None:
    def interrupted(*_: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, name, interrupted)
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert hint in err
    assert ("resume" in err) == (argv[0] == "ingest")
