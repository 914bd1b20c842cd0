"""Guarded fetch of one image: http(s) URL, file:// URL or plain local path -> bytes.

The catalog is untrusted input, so a URL must not turn a worker into a proxy for the internal network
(SSRF) or a sink for endless bodies. Every rule failure is a FetchError with a short `reason` and a
`permanent` flag that tells the caller whether retrying can help.

Host policy is enforced twice:
  1. `check_url` before each request (each redirect hop too): scheme, URL shape, and every address
     the host resolves to;
  2. at connect time, inside a custom urllib3 connection (`make_session`): the host is resolved
     again, every address checked, and the socket is opened to a checked address. Check and connect
     use one resolution, so a DNS answer that changes between the two (DNS rebinding) cannot slip
     a private address in, and any URL parser difference between us and urllib3 is also covered.
"""

from __future__ import annotations

import ipaddress
import os
import random
import re
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, unquote, urljoin, urlsplit
from urllib.request import url2pathname

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, DecodeError, NewConnectionError, ProtocolError
from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeout

from common.config.settings import Settings
from common.errors import FetchError

USER_AGENT = "neardup/0.1"
CHUNK = 64 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

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
# A URL carrying these can be read differently by different parsers (a classic SSRF trick).
_SUSPICIOUS_URL = re.compile(r"[\\\s\x00-\x1f\x7f]")
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$", re.IGNORECASE)


@dataclass(frozen=True)
class FetchPolicy:
    allow_private: bool = False
    file_roots: tuple[Path, ...] = ()
    max_bytes: int = 25 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    deadline: float = 60.0  # total seconds for one download (defeats trickling servers)
    max_redirects: int = 5

    @classmethod
    def from_settings(cls, s: Settings) -> FetchPolicy:
        return cls(
            allow_private=s.allow_private_urls,
            file_roots=tuple(s.file_roots),
            max_bytes=s.max_download_bytes,
            connect_timeout=s.connect_timeout,
            read_timeout=s.read_timeout,
            deadline=s.download_deadline,
            max_redirects=s.max_redirects,
        )


# --------------------------------------------------------------------------- address policy


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known prefix: the last 32 bits are IPv4


def is_public_address(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses; embedded IPv4 in IPv6 is judged as IPv4."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
        if ip.teredo or ip.is_site_local:
            return False
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global  # also covers 100.64/10 (CGNAT), documentation and benchmark ranges
    )


def _literal_ip(host: str) -> IPAddress | None:
    """The address a host names without DNS: dotted quads, IPv6, and the inet_aton spellings
    (2130706433, 0x7f000001, 0177.0.0.1, 127.1) that resolvers accept and naive checks miss."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            raise FetchError("bad_url", f"malformed numeric host {host!r}") from None
    return None


def _resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (module-level so tests can substitute a fake DNS)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def resolve_checked(host: str, port: int, allow_private: bool) -> list[str]:
    """Addresses to connect to for host:port, refusing the host if ANY of them is not public.

    All, not just the first: a name that mixes a public and a private address could otherwise
    steer the connection to the private one on a retry or a different resolver ordering."""
    host = host.strip("[]")
    literal = _literal_ip(host.split("%", 1)[0])
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = _resolve(host, port)
        except UnicodeError:
            raise FetchError("bad_url", f"bad host name {host!r}") from None
        except socket.gaierror as exc:
            # EAI_NONAME: the name does not exist, asking again will not help; others may pass.
            permanent = exc.errno == socket.EAI_NONAME
            raise FetchError("dns_error", f"{host}: {exc}", permanent=permanent) from None
    if not addresses:
        raise FetchError("dns_error", f"{host}: no address", permanent=False)
    if allow_private:
        return addresses
    for text in addresses:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
        if not is_public_address(ip):
            raise FetchError("blocked_address", f"{host} -> {ip} is not a public address")
    return addresses


# --------------------------------------------------------------------------- URL policy


def _split_http(url: str) -> tuple[SplitResult, str, int]:
    if _SUSPICIOUS_URL.search(url):
        raise FetchError("bad_url", "whitespace, control character or backslash in URL")
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise FetchError("bad_url", "credentials in URL")
    host = parts.hostname
    if not host:
        raise FetchError("bad_url", "no host")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise FetchError("bad_url", "bad port") from None
    return parts, host, port


def _scheme(source: str) -> str:
    scheme = urlsplit(source).scheme.lower()
    # A one-letter "scheme" is a Windows drive (C:\...), i.e. a path.
    return "" if len(scheme) == 1 else scheme


def check_url(url: str, policy: FetchPolicy) -> list[str]:
    """Refuse an http(s) URL the policy forbids; return the checked addresses of its host.

    Literal IPs (in any spelling) are judged without DNS, so tests need no resolver. With
    allow_private nothing is resolved (the connection does that) and [] is returned."""
    scheme = _scheme(url)
    if scheme not in ("http", "https"):
        raise FetchError("bad_scheme", f"scheme {scheme or '(none)'!r} is not http(s)")
    _, host, port = _split_http(url)
    if policy.allow_private:
        return []
    return resolve_checked(host, port, allow_private=False)


def check_path(source: str, policy: FetchPolicy) -> Path:
    """The resolved local path for a file:// URL or bare path, if it lies inside an allowed root."""
    if _scheme(source) == "file":
        parts = urlsplit(source)
        if parts.netloc not in ("", "localhost"):
            raise FetchError("bad_url", f"file URL with remote host {parts.netloc!r}")
        raw = url2pathname(unquote(parts.path))
    else:
        raw = source
    if not raw or "\x00" in raw:
        raise FetchError("bad_url", "empty or NUL path")
    # resolve() follows symlinks and removes "..", so a link or an escape pointing out of a root
    # is judged by where it really lands. Checked before existence: no probing outside the roots.
    path = Path(raw).expanduser().resolve()
    for root in policy.file_roots:
        if path.is_relative_to(Path(root).resolve()):
            return path
    raise FetchError("path_not_allowed", f"{path} is outside the allowed file roots")


# --------------------------------------------------------------------------- guarded transport


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
                return super()._new_conn()  # type: ignore[misc]
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

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}

    def proxy_manager_for(self, proxy, **proxy_kwargs):
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


# --------------------------------------------------------------------------- fetch


def fetch(source: str, policy: FetchPolicy, session: requests.Session | None = None) -> bytes:
    """The bytes of one image source, or FetchError. See the module docstring for the rules.

    Pass a session from `make_session(policy)` to reuse connections; a session from elsewhere still
    gets every check_url check, but not the connect-time guard against DNS rebinding."""
    if not isinstance(source, str) or not source.strip():
        raise FetchError("bad_url", "empty source")
    source = source.strip()
    scheme = _scheme(source)
    if scheme in ("", "file"):
        return _read_file(check_path(source, policy), policy)
    if scheme not in ("http", "https"):
        raise FetchError("bad_scheme", f"scheme {scheme!r} is not http, https or file")
    if session is not None:
        return _fetch_http(source, policy, session)
    with make_session(policy) as own:
        return _fetch_http(source, policy, own)


def _read_file(path: Path, policy: FetchPolicy) -> bytes:
    # O_NOFOLLOW: if the last component was swapped for a symlink after check_path, refuse.
    # O_NONBLOCK: opening a FIFO planted under a root must not hang the worker.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FetchError("not_found", str(path)) from None
    except OSError as exc:
        raise FetchError("unreadable", f"{path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FetchError("not_a_file", str(path))
        if info.st_size > policy.max_bytes:
            raise FetchError("too_large", f"{info.st_size} bytes > {policy.max_bytes}")
        with os.fdopen(fd, "rb") as fh:
            fd = -1  # owned by fh now
            data = fh.read(policy.max_bytes + 1)  # the file may have grown since fstat
    except OSError as exc:
        raise FetchError("unreadable", f"{path}: {exc.strerror}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > policy.max_bytes:
        raise FetchError("too_large", f"more than {policy.max_bytes} bytes")
    if not data:
        raise FetchError("empty", str(path))
    return data


def _fetch_http(url: str, policy: FetchPolicy, session: requests.Session) -> bytes:
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
                if _scheme(target) not in ("http", "https"):
                    raise FetchError("bad_scheme", f"redirect to {_scheme(target) or 'a path'!r}: {target}")
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


# --------------------------------------------------------------------------- retries


def fetch_with_retries(
    source: str,
    policy: FetchPolicy,
    retries: int,
    backoff: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    session: requests.Session | None = None,
    max_delay: float = 30.0,
) -> bytes:
    """fetch(), retrying transient errors up to `retries` times with exponential backoff and full
    jitter (spreads a burst of workers hitting one recovering host); re-raises the last error.
    Each attempt has its own policy.deadline."""
    attempt = 0
    while True:
        try:
            return fetch(source, policy, session)
        except FetchError as exc:
            if exc.permanent or attempt >= retries:
                raise
            ceiling = min(max_delay, backoff * (2**attempt))
            sleep(random.uniform(ceiling / 2, ceiling))
            attempt += 1
