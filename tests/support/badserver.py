"""A local HTTP(S) server (127.0.0.1 only) that serves good, slow and bad images on purpose: the one
misbehaving server of the unit tests (tests/unit/conftest.py's fixtures) and the fault tests.

It serves whatever a test registers: `server.put("/p/1.jpg", data, ctype=..., delay=...)` returns the
URL. Answers that a static body cannot express (error statuses, wrong types, redirects, endless,
trickling, lying, stalling, resetting bodies) are named routes: /<route>/<args...>?<options>. Every
request is counted per path (`hits`, with its Host header in `hosts`), and `in_flight` tells a test
that a download is under way.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from tests.support.images import GOOD_JPEG

HTML = b"<!doctype html><html><body>Not found, but with status 200</body></html>"


@dataclass
class Resource:
    body: bytes
    ctype: str | None = "image/jpeg"
    status: int = 200
    delay: float = 0.0  # seconds before the answer (slow image hosts, so a job can be killed mid-way)
    headers: dict[str, str] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    server: BadServer  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        parts = urlsplit(self.path)
        self.server.begin(parts.path, self.headers.get("Host", ""))
        try:
            # The client hanging up early (size cap, deadline) is the point of several routes.
            with contextlib.suppress(OSError, ValueError):
                self._serve(parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()})
        finally:
            self.server.end()

    def _serve(self, path: str, options: dict[str, str]) -> None:
        resource = self.server.resources.get(path)
        if resource is not None:
            if resource.delay and self.server.stopping.wait(resource.delay):
                return
            self.reply(resource.status, resource.body, resource.ctype, **resource.headers)
            return
        route = path.strip("/").split("/")
        handler = getattr(self, "route_" + route[0].replace("-", "_"), None)
        if handler is None:
            self.reply(404, b"no such route", "text/plain")
            return
        handler(*route[1:], **options)

    def reply(self, status: int, body: bytes = b"", ctype: str | None = "image/jpeg", **headers: str) -> None:
        self.send_response(status)
        if ctype is not None:
            self.send_header("Content-Type", ctype)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _close_after(self) -> None:
        self.close_connection = True

    def _open_ended(self) -> None:
        """The headers of an image body without Content-Length: it ends when the connection does."""
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Connection", "close")
        self.end_headers()
        self._close_after()

    # -- good and plain-bad answers
    def route_image(self) -> None:
        self.reply(200, GOOD_JPEG)

    def route_typed(self, *ctype: str) -> None:
        """JPEG bytes under any Content-Type: /typed/application/json; /typed (no header at all)."""
        self.reply(200, GOOD_JPEG, "/".join(ctype) if ctype else None)

    def route_status(self, code: str) -> None:
        self.reply(int(code), b"<html>error page</html>", "text/html")

    def route_html(self) -> None:
        self.reply(200, HTML, "text/html; charset=utf-8")

    def route_empty(self) -> None:
        self.reply(200, b"")

    def route_flaky(self, key: str, fail: str) -> None:
        """/flaky/<key>/<fail> or /flaky?key=&fail=: 503 for the first `fail` requests with this key,
        then the image."""
        if self.server.count(f"flaky:{key}") < int(fail):
            self.reply(503, b"busy", "text/plain")
        else:
            self.reply(200, GOOD_JPEG)

    # -- redirects
    def route_redirect(self, *target: str, to: str = "", status: str = "302") -> None:
        """?to=<url>[&status=30x], or /redirect/<scheme>/<rest>: a 302 to scheme://rest (file, ftp...)."""
        if not to:
            to = f"{target[0]}://{unquote('/'.join(target[1:]))}"  # clients may escape [ ] of IPv6
        self.reply(int(status), b"", "text/plain", Location=to)

    def route_loop(self) -> None:
        self.reply(302, b"", "text/plain", Location="/loop")

    def route_chain(self, n: str) -> None:
        left = int(n)
        self.reply(302, b"", "text/plain", Location=f"/chain/{left - 1}" if left > 1 else "/image")

    def route_no_location(self) -> None:
        self.reply(302, b"", "text/plain")

    # -- bodies that lie, never end, or never come
    def route_endless(self) -> None:
        """No Content-Length, bytes until the client hangs up (64 MiB at most, so a bug cannot hang CI)."""
        self._open_ended()
        chunk = b"\xff\xd8\xff" + b"\0" * 65533
        for _ in range(1024):
            if self.server.stopping.is_set():
                return
            self.wfile.write(chunk)

    def route_declared_huge(self) -> None:
        """Claims 10 GiB, sends a few bytes, then closes."""
        self._close_after()
        self.reply(200, b"\xff\xd8\xff\xe0", "image/jpeg", **{"Content-Length": str(10 * 2**30)})

    def route_lie_short(self) -> None:
        """Declares the first 100 bytes of the image, then sends all of it and 2 MiB more."""
        self._close_after()
        self.reply(200, GOOD_JPEG + b"\0" * 2**21, "image/jpeg", **{"Content-Length": "100"})

    def route_lie_long(self) -> None:
        """Declares 50000 bytes, sends 300 and closes."""
        self._close_after()
        self.reply(200, GOOD_JPEG[:300], "image/jpeg", **{"Content-Length": "50000"})

    def route_trickle(self) -> None:
        """One byte every 0.1 s without Content-Length: every read succeeds, the whole never ends."""
        self._open_ended()
        for byte in GOOD_JPEG[:400]:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            if self.server.stopping.wait(0.1):
                return

    def route_stall(self) -> None:
        """Headers, then silence."""
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", "5000")
        self.end_headers()
        self.wfile.flush()
        self._close_after()
        self.server.stopping.wait(8)

    def route_bad_gzip(self) -> None:
        """Content-Encoding: gzip over bytes that are not gzip (we ask for identity)."""
        self.reply(200, b"this is not gzip at all", "image/jpeg", **{"Content-Encoding": "gzip"})

    def route_garbage(self) -> None:
        """Not HTTP at all."""
        self._close_after()
        self.wfile.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n\x00\x01\x02")

    def route_reset(self) -> None:
        """Accepts the request, then resets the connection without a byte of answer."""
        self._close_after()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()


class BadServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stopping = threading.Event()
        self.resources: dict[str, Resource] = {}
        self.hits: Counter[str] = Counter()
        self.hosts: list[str] = []
        self._counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def port(self) -> int:
        return self.server_address[1]

    def handle_error(self, request, client_address) -> None:
        pass  # connections cut on purpose (reset, caps) are not worth a traceback

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        scheme = "https" if isinstance(self.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def put(
        self,
        path: str,
        body: bytes,
        ctype: str | None = "image/jpeg",
        status: int = 200,
        delay: float = 0.0,
        **headers: str,
    ) -> str:
        """Serve `body` at `path` from now on; returns its URL."""
        self.resources[path] = Resource(body, ctype, status, delay, dict(headers))
        return self.url(path)

    def begin(self, path: str, host: str) -> None:
        with self._lock:
            self.hits[path] += 1
            self.hosts.append(host)
            self._in_flight += 1

    def end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def count(self, key: str) -> int:
        """Increment-and-return-previous for a named counter (the flaky route's, apart from `hits`)."""
        with self._lock:
            previous = self._counters[key]
            self._counters[key] += 1
            return previous

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight


@contextlib.contextmanager
def running_server(tls: ssl.SSLContext | None = None) -> Iterator[BadServer]:
    """A BadServer answering on a thread; over TLS with `tls` (a server-side context)."""
    server = BadServer()
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
