"""`neardup flower`: Celery Flower on the configured broker, always behind basic auth and read-only.

The credentials travel to Flower in its own FLOWER_BASIC_AUTH variable, not on the command line, so
they do not show in `ps`. Read-only is Flower 2.2's `--read_only`: every mutating API endpoint
(task apply/send/abort/revoke, worker shutdown, pool and queue control) answers 403.
"""

from __future__ import annotations

from collections.abc import Mapping

AUTH_VARIABLE = "NEARDUP_FLOWER_AUTH"
DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 5555


class FlowerConfigError(ValueError):
    """NEARDUP_FLOWER_AUTH is missing or not user:password."""


def basic_auth(environ: Mapping[str, str]) -> str:
    """The user:password pair from NEARDUP_FLOWER_AUTH; Flower must never run open."""
    value = environ.get(AUTH_VARIABLE, "").strip()
    if not value:
        raise FlowerConfigError(f"{AUTH_VARIABLE} is not set: give user:password (Flower never runs open)")
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise FlowerConfigError(f"{AUTH_VARIABLE} must be user:password")
    if "," in value:
        # Flower splits FLOWER_BASIC_AUTH on commas (a list of users): a comma would cut the password.
        raise FlowerConfigError(f"{AUTH_VARIABLE} must not contain a comma")
    return value


def flower_command(address: str = DEFAULT_ADDRESS, port: int = DEFAULT_PORT) -> list[str]:
    from producer.local import celery_command

    return celery_command(
        "flower", f"--address={address}", f"--port={port}", "--read_only=true", "--persistent=false"
    )


def flower_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The child's environment: the caller's, plus the credentials in Flower's own variable."""
    # Other FLOWER_* options (url_prefix, ...) pass through; these two would undo auth or read-only.
    env = {k: v for k, v in environ.items() if k not in ("FLOWER_UNAUTHENTICATED_API", "FLOWER_READ_ONLY")}
    env["FLOWER_BASIC_AUTH"] = basic_auth(environ)
    return env
