"""The value rules every way in shares: NEARDUP_* variables (common.config.settings), command-line
options (producer.cli) and query messages (common.match.querying). Each raises ValueError saying what
is wrong; each caller turns that into its own kind of error (ConfigError, argparse's usage error,
BadRequest), so one value is refused with the same words wherever it is given."""

from __future__ import annotations

import math

MAX_DISTANCE = 64  # bits of a dHash


# -- values already typed (a query message's JSON numbers, or the text ones below once parsed) --------


def check_distance(value: int) -> int:
    if not 0 <= value <= MAX_DISTANCE:
        raise ValueError(f"must be a Hamming distance in [0, {MAX_DISTANCE}]")
    return value


def check_similarity(value: float) -> float:
    if not 0 < value <= 100:
        raise ValueError("must be a percentage in (0, 100]")
    return value


def preset(name: str) -> str:
    from common.match.presets import PRESETS  # local import: presets may grow heavier than settings

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    return name


# -- text (an environment variable, an option's argument) ---------------------------------------------


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("must be a whole number") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("must be a number") from None


def positive_int(text: str) -> int:
    value = whole_number(text)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def non_negative_int(text: str) -> int:
    value = whole_number(text)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def positive_float(text: str) -> float:
    value = number(text)
    if not math.isfinite(value) or value <= 0:  # inf would wait forever, nan compares false
        raise ValueError("must be a finite number > 0")
    return value


def distance(text: str) -> int:
    return check_distance(whole_number(text))


def similarity(text: str) -> float:
    return check_similarity(number(text))
