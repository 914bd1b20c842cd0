"""One Redis URL, two dialects: redis-py speaks unix://, Celery/kombu speaks redis+socket://. Every
conversion between them, and every reading of a URL's database number, is here."""

from __future__ import annotations

from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

# The schemes redis-py's Redis.from_url reads (NEARDUP_REDIS_URL must be one of them).
REDIS_PY_SCHEMES = ("redis://", "rediss://", "unix://")
# Unix-socket URLs name the database in a query parameter, under another name in each dialect.
_DB_PARAM = {"unix": "db", "redis+socket": "virtual_host"}


def _join(parts: SplitResult) -> str:
    """urlunsplit drops the empty host of unix-socket URLs (unix:///path); keep the three slashes."""
    if parts.netloc:
        return urlunsplit(parts)
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.path}{query}"


def with_db(url: str, db: int) -> str:
    """The same server, another database number (index, broker and results are kept apart)."""
    parts = urlsplit(url)
    if parts.scheme in _DB_PARAM:
        query = dict(parse_qsl(parts.query))
        query[_DB_PARAM[parts.scheme]] = str(db)
        return _join(parts._replace(query=urlencode(query)))
    return _join(parts._replace(path=f"/{db}"))


def _to_dialect(url: str, scheme: str) -> str:
    """A unix-socket URL in the other dialect: its scheme and its database parameter renamed."""
    parts = urlsplit(url)
    if parts.scheme not in _DB_PARAM or parts.scheme == scheme:
        return url
    query = dict(parse_qsl(parts.query))
    if _DB_PARAM[parts.scheme] in query:
        query[_DB_PARAM[scheme]] = query.pop(_DB_PARAM[parts.scheme])
    return _join(parts._replace(scheme=scheme, query=urlencode(query)))


def for_celery(url: str) -> str:
    """kombu wants redis+socket:///path?virtual_host=N for unix sockets."""
    return _to_dialect(url, "redis+socket")


def for_redis_py(url: str) -> str:
    """The inverse of for_celery: kombu's redis+socket:///path?virtual_host=N as unix:///path?db=N."""
    return _to_dialect(url, "unix")


def db_of(url: str) -> int:
    """The database number of a URL in either dialect (0 when it names none)."""
    parts = urlsplit(url)
    if parts.scheme in _DB_PARAM:
        return int(dict(parse_qsl(parts.query)).get(_DB_PARAM[parts.scheme], 0))
    return int(parts.path.strip("/") or 0)
