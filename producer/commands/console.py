"""What the commands share: the exit codes, messages on stderr, the default output and its check."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from common.errors import ConfigError

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
DEFAULT_OUTPUT = "near_duplicate_image.json"


class Unavailable(RuntimeError):
    """Redis, the broker or the workers could not be reached, started or kept going: exit 3.

    Only these: any other RuntimeError is a bug and ends the CLI with its traceback."""


def say(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


def check_output(path: str) -> None:
    """Refuse an output path that cannot be written before any work is done (not after: the results
    would be lost)."""
    out = Path(path)
    if out.is_dir():
        raise ConfigError("bad_output", f"output {path} is a directory: name a file")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError("bad_output", f"output {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError("bad_output", f"output {path}: folder {parent} is not writable")
    if out.exists() and not os.access(out, os.W_OK):
        raise ConfigError("bad_output", f"output {path} is not writable")
