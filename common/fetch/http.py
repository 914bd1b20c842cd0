"""The guarded HTTP(S) download: a session whose connections only open to checked addresses, redirects
re-checked hop by hop, status and Content-Type checks, and a body read under size and time limits.

Host policy (common.fetch.policy) is enforced twice:
  1. `check_url` before each request (each redirect hop too): scheme, URL shape, and every address
     the host resolves to;
  2. at connect time, inside a custom urllib3 connection (`make_session`): the host is resolved
     again, every address checked, and the socket is opened to a checked address. Check and connect
     use one resolution, so a DNS answer that changes between the two (DNS rebinding) cannot slip
     a private address in, and any URL parser difference between us and urllib3 is also covered.
"""

from __future__ import annotations

import socket
import time
from typing import Any, NoReturn
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, DecodeError, NewConnectionError, ProtocolError
from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeout

from common.errors import FetchError
from common.fetch.policy import FetchPolicy, check_url, resolve_checked, source_scheme

USER_AGENT = "neardup/0.1"
CHUNK = 64 * 1024

# Content types that are plainly not an image. Anything else (image/*, missing, generic octet
# streams, odd vendor types) goes on to the decoder, which has the last word.
_NOT_IMAGE_MAJOR = {"text", "video", "audio", "multipart", "font", "model", "message"}
_GENERIC_APPLICATION = {
    "application/octet-stream",
    "application/binary",
    "application/unknown",
    "application/x-unknown",
    "application/x-octet-stream",
    "application/download",
    "application/force-download",
}
_REDIRECTS = {301, 302, 303, 307, 308}
# Client errors worth retrying; every other 4xx is the same next time.
_TRANSIENT_4XX = {408, 425, 429}


class _GuardedConnectionMixin:
    """Resolve, check and connect in one step, so what was checked is what is connected to."""

    _dns_host: str
    port: int

    def _new_conn(self) -> socket.socket:
        name = self._dns_host
        addresses = resolve_checked(name.rstrip("."), self.port, allow_private=False)
        last: Exception | None = None
        for address in addresses:
            # urllib3 connects to `_dns_host`; TLS SNI and the Host header keep using `host`.
            self._dns_host = address
            try:
                conn: socket.socket = super()._new_conn()  # type: ignore[misc]
                return conn
            except (NewConnectionError, ConnectTimeoutError) as exc:
                last = exc
            finally:
                self._dns_host = name
        assert last is not None
        raise last


class _GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections only ever open to public addresses."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> NoReturn:
        # Through a proxy the connect-time check would judge the proxy, not the target.
        raise FetchError("bad_config", "proxies are not supported by the guarded fetch")


def make_session(policy: FetchPolicy, pool_size: int = 16) -> requests.Session:
    """A Session for `fetch`: connect-time address guard (unless allow_private), no env proxies or
    .netrc, our User-Agent. Reuse one per thread to keep connections alive across downloads."""
    session = requests.Session()
    session.trust_env = False  # no HTTP(S)_PROXY, no .netrc credentials sent to image hosts
    session.headers.update(
        {"User-Agent": USER_AGENT, "Accept": "image/*,*/*;q=0.5", "Accept-Encoding": "identity"}
    )
    adapter_cls = HTTPAdapter if policy.allow_private else GuardedAdapter
    adapter = adapter_cls(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def fetch_http(url: str, policy: FetchPolicy, session: requests.Session) -> bytes:
    started = time.monotonic()
    hops = 0
    while True:
        check_url(url, policy)
        remaining = policy.deadline - (time.monotonic() - started)
        if remaining <= 0:
            raise FetchError("timeout", f"deadline of {policy.deadline}s passed", permanent=False)
        timeout = (min(policy.connect_timeout, remaining), min(policy.read_timeout, remaining))
        try:
            response = session.get(url, stream=True, allow_redirects=False, timeout=timeout)
        except FetchError:
            raise  # from the connect-time guard
        except requests.exceptions.Timeout as exc:
            raise FetchError("timeout", _short(exc), permanent=False) from None
        except requests.exceptions.SSLError as exc:
            # A certificate that fails verification fails again; a handshake cut short may not.
            bad_cert = "certificate verify failed" in str(exc).lower()
            raise FetchError("tls_error", _short(exc), permanent=bad_cert) from None
        except requests.exceptions.ConnectionError as exc:
            raise FetchError("connect_error", _short(exc), permanent=False) from None
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as exc:
            raise FetchError("bad_url", _short(exc)) from None
        except requests.exceptions.RequestException as exc:
            raise FetchError("connect_error", _short(exc), permanent=False) from None
        with response:
            if response.status_code in _REDIRECTS and response.headers.get("Location"):
                hops += 1
                if hops > policy.max_redirects:
                    raise FetchError("too_many_redirects", f"more than {policy.max_redirects}")
                target = urljoin(url, response.headers["Location"])
                if source_scheme(target) not in ("http", "https"):
                    raise FetchError(
                        "bad_scheme", f"redirect to {source_scheme(target) or 'a path'!r}: {target}"
                    )
                url = target
                continue
            _check_status(response.status_code)
            _check_content_type(response.headers.get("Content-Type", ""))
            return _read_body(response, policy, started)


def _check_status(status: int) -> None:
    if 200 <= status < 300 and status not in (204, 205, 206):
        return
    if status in (204, 205):
        raise FetchError("empty", f"HTTP {status}")
    transient = status >= 500 or status in _TRANSIENT_4XX
    raise FetchError(f"http_{status}", permanent=not transient)


def _check_content_type(header: str) -> None:
    media = header.split(";", 1)[0].strip().lower()
    if not media or media.startswith("image/") or media in _GENERIC_APPLICATION:
        return
    if media == "binary/octet-stream":  # S3's generic type
        return
    major = media.split("/", 1)[0]
    if major in _NOT_IMAGE_MAJOR or major == "application":
        raise FetchError("not_image", f"Content-Type {media}")


def _read_body(response: requests.Response, policy: FetchPolicy, started: float) -> bytes:
    declared: int | None = None
    length = response.headers.get("Content-Length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            declared = None  # unparseable: treat as missing, the byte count below still applies
        if declared is not None and declared > policy.max_bytes:
            raise FetchError("too_large", f"Content-Length {declared} > {policy.max_bytes}")
    raw = response.raw
    read = getattr(raw, "read1", raw.read)  # read1 needs urllib3 >= 2.3; read() blocks per chunk
    chunks: list[bytes] = []
    received = 0
    try:
        while True:
            # read1 returns as soon as any bytes arrive, so the deadline is checked between pieces
            # of a trickling body instead of after a 64 KiB buffer that may take hours to fill.
            piece = read(CHUNK)
            if not piece:
                break
            received += len(piece)
            if received > policy.max_bytes:
                raise FetchError("too_large", f"more than {policy.max_bytes} bytes")
            chunks.append(piece)
            if time.monotonic() - started > policy.deadline:
                raise FetchError("timeout", f"deadline of {policy.deadline}s passed", permanent=False)
    except (Urllib3ReadTimeout, TimeoutError) as exc:
        raise FetchError("timeout", _short(exc), permanent=False) from None
    except ProtocolError as exc:
        # urllib3 enforces Content-Length: a connection that ends early arrives here.
        if declared is not None and raw.tell() < declared:
            raise FetchError("truncated", f"{raw.tell()} of {declared} bytes", permanent=False) from None
        raise FetchError("connect_error", _short(exc), permanent=False) from None
    except DecodeError as exc:
        raise FetchError("bad_encoding", _short(exc)) from None
    except OSError as exc:
        raise FetchError("connect_error", _short(exc), permanent=False) from None
    if declared is not None and raw.tell() < declared:
        raise FetchError("truncated", f"{raw.tell()} of {declared} bytes", permanent=False)
    if not received:
        raise FetchError("empty", "zero-byte body")
    return b"".join(chunks)


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:297] + "..."
