"""The index's Redis Lua scripts, read at import from the .lua files beside this module.

The scripts ship as package data (pyproject.toml), so an installed copy reads them the same way as a
checkout; each file names its KEYS and ARGV at the top.
"""

from __future__ import annotations

from importlib.resources import files


def load(name: str) -> str:
    """The text of common/index/<name>.lua."""
    return files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


WRITE = load("write")  # IndexStore.write
REMOVE = load("remove")  # IndexStore.remove
SCAN_ROWS = load("scan_rows")  # IndexStore.rows_and_signatures(scan_only=True)
