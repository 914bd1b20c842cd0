"""Text in a message that is not valid Unicode.

JSON carries lone surrogates (`"\\udcff"`, what Python makes of a file name byte that is not UTF-8),
and a worker decodes them into a str that Redis cannot encode: answering such a query failed, the
answer could not even be recorded, and the message went back to the queue forever. Here a key or id
is written with the offending characters escaped (`bad\\udcff.jpg`), so the answer lands and the
message is acked; a url or path with them is answered with an error (fetching some other,
"repaired" address would be wrong).
"""

from __future__ import annotations

from typing import Any

from common.errors import BadRequest

SOURCE_FIELDS = ("product_id", "url", "path", "image_b64")


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def utf8_safe(text: str) -> str:
    """`text` itself when it is valid Unicode, else with lone surrogates escaped as \\udcXX."""
    return text if is_utf8(text) else text.encode("utf-8", "backslashreplace").decode("utf-8")


def undecodable(body: dict[str, Any]) -> BadRequest | None:
    """The error for a query whose input field is not valid Unicode, else None."""
    for name in SOURCE_FIELDS:
        value = body.get(name)
        if isinstance(value, str) and not is_utf8(value):
            return BadRequest("not_utf8", f"{name} {utf8_safe(value)[:200]!r} is not valid UTF-8")
    return None
