"""Unit-test helpers: generated images and a local HTTP server (127.0.0.1 only) that misbehaves on
purpose: error statuses, wrong types, endless, lying, trickling, stalling and redirecting bodies."""

from __future__ import annotations

import contextlib
import io
import shutil
import ssl
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image


def photo_like(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    """A deterministic RGB picture with gradients, shapes and noise, so dHash bits are not trivial."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    fx, fy, phase = rng.uniform(0.01, 0.08, 3)
    base = 128 + 60 * np.sin(x * fx + phase) * np.cos(y * fy) + 40 * (x / width - y / height)
    channels = [base + rng.uniform(-40, 40) + rng.normal(0, 6, base.shape) for _ in range(3)]
    pixels = np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)
    for _ in range(4):  # a few flat blocks, like a garment on a background
        x0, y0 = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        pixels[y0 : y0 + int(rng.integers(10, 40)), x0 : x0 + int(rng.integers(10, 40))] = rng.integers(
            0, 256, 3
        )
    return Image.fromarray(pixels)


def encode(image: Image.Image, fmt: str = "JPEG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


GOOD_JPEG = encode(photo_like(seed=1), quality=90)
HTML = b"<!doctype html><html><body>Not found, but with status 200</body></html>"


class _Handler(BaseHTTPRequestHandler):
    server: ImageServer  # type: ignore[assignment]

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.server.record(parts.path, self.headers.get("Host", ""))
        route = parts.path.strip("/").split("/")
        handler = getattr(self, "route_" + route[0].replace("-", "_"), None)
        if handler is None:
            self.reply(404, b"no such route", "text/plain")
            return
        # The client hanging up early (cap, deadline) is the point of several tests.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            handler(*route[1:], **query)

    def reply(self, status: int, body: bytes = b"", ctype: str | None = "image/jpeg", **headers) -> None:
        self.send_response(status)
        if ctype is not None:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", headers.pop("length", str(len(body))))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    # -- good and plain-bad answers
    def route_image(self) -> None:
        self.reply(200, GOOD_JPEG)

    def route_typed(self, *ctype: str) -> None:
        """JPEG bytes under any Content-Type: /typed/application/json; /typed (no header at all)."""
        self.reply(200, GOOD_JPEG, "/".join(ctype) if ctype else None)

    def route_status(self, code: str) -> None:
        self.reply(int(code), b"error page", "text/html")

    def route_html(self) -> None:
        self.reply(200, HTML, "text/html; charset=utf-8")

    def route_empty(self) -> None:
        self.reply(200, b"")

    def route_flaky(self, key: str, fail: str) -> None:
        """503 for the first `fail` requests with this key, then the image."""
        if self.server.count(f"flaky:{key}") < int(fail):
            self.reply(503, b"busy", "text/plain")
        else:
            self.reply(200, GOOD_JPEG)

    # -- bodies that lie or never end
    def route_declared_huge(self) -> None:
        self.reply(200, b"", length=str(10 * 2**30))  # claims 10 GiB, sends nothing

    def route_endless(self) -> None:
        """No Content-Length, bytes until the client hangs up (capped so a bug cannot hang CI)."""
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        chunk = b"\xff" * 65536
        for _ in range(1024):  # 64 MiB at most
            self.wfile.write(chunk)

    def route_lie_short(self) -> None:
        """Declares 100 bytes, sends 2 MiB."""
        self.reply(200, GOOD_JPEG[:100] + b"\0" * 2**21, length="100")

    def route_lie_long(self) -> None:
        """Declares 10000 bytes, sends 100 and closes."""
        self.reply(200, GOOD_JPEG[:100], length="10000")

    def route_trickle(self) -> None:
        """One byte every 0.2 s, no Content-Length: each read succeeds, the whole never ends."""
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        for byte in GOOD_JPEG[:50]:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            if self.server.stopping.wait(0.2):
                return

    def route_stall(self) -> None:
        """Headers, then silence."""
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.flush()
        self.server.stopping.wait(5)

    # -- redirects
    def route_redirect(self, to: str, status: str = "302") -> None:
        self.reply(int(status), b"", "text/plain", Location=to)

    def route_loop(self) -> None:
        self.reply(302, b"", "text/plain", Location="/loop")

    def route_chain(self, n: str) -> None:
        left = int(n)
        self.reply(302, b"", "text/plain", Location=f"/chain/{left - 1}" if left > 1 else "/image")

    def route_no_location(self) -> None:
        self.reply(302, b"", "text/plain")


class ImageServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self.hosts: list[str] = []

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        scheme = "https" if isinstance(self.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def record(self, path: str, host: str) -> None:
        with self._lock:
            self.hits[path] += 1
            self.hosts.append(host)

    def count(self, key: str) -> int:
        """Increment-and-return-previous for a named counter (used by the flaky route)."""
        with self._lock:
            previous = self.hits[key]
            self.hits[key] += 1
            return previous


@pytest.fixture(scope="session")
def http_server() -> Iterator[ImageServer]:
    server = ImageServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.stopping.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="session")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ImageServer, str]]:
    """The same routes over TLS with a throwaway certificate for cdn.example: (server, CA file)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl command not available to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", "/CN=cdn.example", "-addext", "subjectAltName=DNS:cdn.example", "-days", "1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = ImageServer()
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server, str(cert)
    server.stopping.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


class FakeDNS:
    """Stands in for common.fetch.policy._resolve: names map to address lists, or to a list of answers
    handed out one per lookup (to play a rebinding DNS server)."""

    def __init__(self, answers: dict[str, list[str] | list[list[str]]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        import socket

        self.lookups.append(host)
        answer = self.answers.get(host)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if answer and isinstance(answer[0], list):
            return answer[min(len(self.lookups_of(host)), len(answer)) - 1]  # type: ignore[return-value]
        return answer  # type: ignore[return-value]

    def lookups_of(self, host: str) -> list[str]:
        return [h for h in self.lookups if h == host]


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch):
    """fake_dns({"cdn.example": ["93.184.216.34"]}) -> the FakeDNS installed for this test."""

    def install(answers: dict) -> FakeDNS:
        dns = FakeDNS(answers)
        monkeypatch.setattr("common.fetch.policy._resolve", dns)
        return dns

    return install


# Helpers as fixtures: tests/unit is not a package, so importing this conftest by name is fragile.
@pytest.fixture(scope="session")
def make_photo():
    return photo_like


@pytest.fixture(scope="session")
def encode_image():
    return encode


@pytest.fixture(scope="session")
def good_jpeg() -> bytes:
    return GOOD_JPEG
