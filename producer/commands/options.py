"""The CLI's option types: the shared value rules (common.config.values) as argparse types."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from common.config import values

T = TypeVar("T")


def option(parse: Callable[[str], T]) -> Callable[[str], T]:
    """A shared value rule (common.config.values) as an option type: argparse shows the rule's own
    words only when they come as an ArgumentTypeError."""

    def checked(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return checked


preset = option(values.preset)
distance = option(values.distance)
positive = option(values.positive_int)
seconds = option(values.positive_float)
