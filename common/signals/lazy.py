"""Signatures made on first use: a query's thumbnails, its mirror's keypoints and its restored
backdrop's keypoints and thumbnail (common.match.describe._query_views) cost several ms of its
describe, and most queries never read them (only candidates the mirrored views brought need the
mirror's ORB; only ORB passes reach the thumbnails). A maker that fails is kept, so the next read
raises again instead of finding the key gone."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any


class LazySignatures(dict[str, bytes]):
    """A plain dict of signatures, except that the values of the `later` keys are made on first read.

    `sig[key]`, `sig.get(key)` make one value; `key in sig`, iteration and `len` see every key and make
    nothing. Anything else (items, values, ==, copy, updates...) makes the rest first, so the dict
    then behaves exactly as the one describe would have built eagerly."""

    def __init__(self, ready: Mapping[str, bytes], later: Mapping[str, Callable[[], bytes]]) -> None:
        super().__init__(ready)
        self._later = {k: make for k, make in later.items() if k not in ready}

    def __missing__(self, key: str) -> bytes:
        make = self._later.get(key)
        if make is None:
            raise KeyError(key)
        value = make()  # when it raises, the maker stays: `key in self` stays true, reads raise again
        self._later.pop(key, None)
        dict.__setitem__(self, key, value)
        return value

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or key in self._later

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default  # noqa: SIM401 - this is get: [] makes the value

    def __iter__(self) -> Iterator[str]:
        return iter([*dict.keys(self), *self._later])

    def __len__(self) -> int:
        return dict.__len__(self) + len(self._later)

    def pending(self) -> list[str]:
        """The keys not made yet."""
        return list(self._later)

    def __reduce__(self) -> tuple[type, tuple[dict[str, bytes]]]:
        return (dict, (dict(self.resolve().items()),))  # a copy or a pickle is a plain dict

    def resolve(self) -> LazySignatures:
        """Make every value now."""
        for key in list(self._later):
            self[key]
        return self


def _resolving(name: str) -> Callable[..., Any]:
    base = getattr(dict, name)

    def method(self: LazySignatures, *args: Any, **kwargs: Any) -> Any:
        self.resolve()
        return base(self, *args, **kwargs)

    method.__name__ = name
    return method


for _name in (
    "keys", "items", "values", "copy", "pop", "popitem", "setdefault", "update", "clear",
    "__setitem__", "__delitem__", "__eq__", "__ne__", "__repr__", "__or__", "__ior__", "__reversed__",
):  # fmt: skip
    setattr(LazySignatures, _name, _resolving(_name))
