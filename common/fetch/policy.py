"""What a fetch may touch: the FetchPolicy, and the URL, address and path rules it is judged by.

The catalog is untrusted input, so a URL must not turn a worker into a proxy for the internal network
(SSRF). Every rule failure is a FetchError with a short `reason` and a `permanent` flag that tells the
caller whether retrying can help. `check_url` runs before each request (each redirect hop too):
scheme, URL shape, and every address the host resolves to; common.fetch.http runs `resolve_checked`
again at connect time.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit
from urllib.request import url2pathname

from common.config.settings import Settings
from common.errors import FetchError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# A URL carrying these can be read differently by different parsers (a classic SSRF trick).
_SUSPICIOUS_URL = re.compile(r"[\\\s\x00-\x1f\x7f]")
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$", re.IGNORECASE)


@dataclass(frozen=True)
class FetchPolicy:
    # The defaults are the Settings defaults (a dataclass keeps a field's default on the class), so
    # they are written in one place.
    allow_private: bool = Settings.allow_private_urls
    file_roots: tuple[Path, ...] = Settings.file_roots
    max_bytes: int = Settings.max_download_bytes
    connect_timeout: float = Settings.connect_timeout
    read_timeout: float = Settings.read_timeout
    deadline: float = Settings.download_deadline  # total seconds for one download (defeats trickling servers)
    max_redirects: int = Settings.max_redirects

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


def source_scheme(source: str) -> str:
    scheme = urlsplit(source).scheme.lower()
    # A one-letter "scheme" is a Windows drive (C:\...), i.e. a path.
    return "" if len(scheme) == 1 else scheme


def check_url(url: str, policy: FetchPolicy) -> list[str]:
    """Refuse an http(s) URL the policy forbids; return the checked addresses of its host.

    Literal IPs (in any spelling) are judged without DNS, so tests need no resolver. With
    allow_private nothing is resolved (the connection does that) and [] is returned."""
    scheme = source_scheme(url)
    if scheme not in ("http", "https"):
        raise FetchError("bad_scheme", f"scheme {scheme or '(none)'!r} is not http(s)")
    _, host, port = _split_http(url)
    if policy.allow_private:
        return []
    return resolve_checked(host, port, allow_private=False)


def check_path(source: str, policy: FetchPolicy) -> Path:
    """The resolved local path for a file:// URL or bare path, if it lies inside an allowed root."""
    if source_scheme(source) == "file":
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
