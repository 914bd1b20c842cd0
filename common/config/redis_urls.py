"""One Redis URL, two dialects: redis-py speaks unix://, Celery/kombu speaks redis+socket://. Every
conversion between them, and every reading of a URL's database number, is here."""

from __future__ import annotations

from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

# The schemes redis-py's Redis.from_url reads (NEARDUP_REDIS_URL must be one of them).
REDIS_PY_SCHEMES = ("redis://", "rediss://", "unix://")


def _join(parts: SplitResult) -> str:
    """urlunsplit drops the empty host of unix-socket URLs (unix:///path); keep the three slashes."""
    if parts.netloc:
        return urlunsplit(parts)
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.path}{query}"


def with_db(url: str, db: int) -> str:
    """The same server, another database number (index, broker and results are kept apart)."""
    parts = urlsplit(url)
    if parts.scheme in ("unix", "redis+socket"):
        query = dict(parse_qsl(parts.query))
        query["db" if parts.scheme == "unix" else "virtual_host"] = str(db)
        return _join(parts._replace(query=urlencode(query)))
    return _join(parts._replace(path=f"/{db}"))


def for_celery(url: str) -> str:
    """kombu wants redis+socket:///path?virtual_host=N for unix sockets."""
    parts = urlsplit(url)
    if parts.scheme != "unix":
        return url
    query = dict(parse_qsl(parts.query))
    if "db" in query:
        query["virtual_host"] = query.pop("db")
    return _join(parts._replace(scheme="redis+socket", query=urlencode(query)))


def for_redis_py(url: str) -> str:
    """The inverse of for_celery: kombu's redis+socket:///path?virtual_host=N as unix:///path?db=N."""
    parts = urlsplit(url)
    if parts.scheme != "redis+socket":
        return url
    query = dict(parse_qsl(parts.query))
    if "virtual_host" in query:
        query["db"] = query.pop("virtual_host")
    return _join(parts._replace(scheme="unix", query=urlencode(query)))


def db_of(url: str) -> int:
    """The database number of a URL in either dialect (0 when it names none)."""
    parts = urlsplit(url)
    if parts.scheme in ("unix", "redis+socket"):
        q = dict(parse_qsl(parts.query))
        return int(q.get("db", q.get("virtual_host", 0)))
    return int(parts.path.strip("/") or 0)
