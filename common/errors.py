"""Specific error types. Tasks turn them into recorded failures with a short `reason` code."""

from __future__ import annotations

from typing import Any


class NeardupError(Exception):
    """Base error: `reason` is a short stable code (e.g. "http_404"), `permanent` says retrying is useless."""

    stage = "unknown"

    def __init__(self, reason: str, detail: str = "", *, permanent: bool = True) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.permanent = permanent


class FetchError(NeardupError):
    stage = "fetch"


class ImageError(NeardupError):
    stage = "decode"


class BadRequest(NeardupError):
    stage = "request"


class ConfigError(NeardupError):
    stage = "config"


def failure_result(stage: str, reason: str, detail: str) -> dict[str, Any]:
    """The one shape of a failed task or query answer, wherever it is built (worker, library, client)."""
    return {"ok": False, "error": {"stage": stage, "reason": reason, "detail": detail}}


def error_result(exc: NeardupError) -> dict[str, Any]:
    return failure_result(exc.stage, exc.reason, str(exc))
