"""A local HTTP server (127.0.0.1 only) that serves good, slow and bad images on purpose, plus the
helpers the fault tests share: unusual-but-valid images, worker processes and their PIDs.

Unlike tests/unit/conftest.py's ImageServer (fixed routes, unit tests), this one serves whatever a
test registers: `server.put("/p/1.jpg", data, ctype=..., delay=...)` returns the URL. Misbehaving
answers that a static body cannot express (endless, trickling, lying, resetting) are named routes.
Every request is counted per path, and `in_flight` tells a test that a download is under way.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
from PIL import Image

from common.config.settings import Settings
from producer.connection import celery_app
from producer.local import WorkerProcess

# --------------------------------------------------------------------------- images


def photo_like(width: int = 240, height: int = 180, seed: int = 0) -> Image.Image:
    """A deterministic RGB picture with gradients, blocks and noise: dHash bits are not trivial and two
    seeds give unrelated hashes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    fx, fy, phase = rng.uniform(0.01, 0.08, 3)
    base = 128 + 60 * np.sin(x * fx + phase) * np.cos(y * fy) + 40 * (x / width - y / height)
    channels = [base + rng.uniform(-40, 40) + rng.normal(0, 6, base.shape) for _ in range(3)]
    pixels = np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        size_y, size_x = int(rng.integers(10, 40)), int(rng.integers(10, 40))
        pixels[y0 : y0 + size_y, x0 : x0 + size_x] = rng.integers(0, 256, 3)
    return Image.fromarray(pixels)


def encode(image: Image.Image, fmt: str = "JPEG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def jpeg(seed: int) -> bytes:
    return encode(photo_like(seed=seed), quality=88)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid PNG header claiming width x height (8-bit RGB) with a few hundred bytes of pixel data:
    the classic decompression bomb shape, a tiny file that would need gigabytes to decode."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def gif_bomb(width: int = 65_535, height: int = 65_535) -> bytes:
    """A GIF whose logical screen and only frame claim 65535 x 65535 pixels, in about 40 bytes."""
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return header + frame + b"\x3b"


def unusual_images(seed: int = 500) -> dict[str, tuple[bytes, str]]:
    """Valid images in the modes and containers catalogs really carry: each must be indexed, not fail.
    name -> (bytes, content type)."""
    photo = photo_like(seed=seed)
    grey16 = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    frames = [photo_like(seed=seed + i) for i in range(3)]
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, shown upright
    bad_exif = Image.Exif()
    bad_exif[0x0112] = 99  # an orientation value that does not exist
    palette_alpha = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return {
        "cmyk_jpeg": (encode(photo.convert("CMYK"), quality=90), "image/jpeg"),
        "grey_jpeg": (encode(photo.convert("L"), quality=90), "image/jpeg"),
        "progressive_jpeg": (encode(photo, quality=85, progressive=True), "image/jpeg"),
        "exif_rotated_jpeg": (encode(photo, quality=90, exif=exif.tobytes()), "image/jpeg"),
        "bad_exif_orientation": (encode(photo, quality=90, exif=bad_exif.tobytes()), "image/jpeg"),
        "grey16_png": (encode(Image.fromarray(grey16), "PNG"), "image/png"),
        "palette_png": (encode(photo.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), "image/png"),
        "palette_alpha_png": (encode(palette_alpha, "PNG", transparency=0), "image/png"),
        "rgba_png": (encode(rgba, "PNG"), "image/png"),
        "la_png": (encode(rgba.convert("LA"), "PNG"), "image/png"),
        "bilevel_png": (encode(photo.convert("1"), "PNG"), "image/png"),
        "animated_gif": (
            encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0),
            "image/gif",
        ),
        "animated_webp": (
            encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=80, lossless=True),
            "image/webp",
        ),
        "webp": (encode(photo, "WEBP", quality=80), "image/webp"),
        "tiff": (encode(photo, "TIFF"), "image/tiff"),
        "bmp": (encode(photo, "BMP"), "image/bmp"),
        "tiny_1x1_png": (encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), "image/png"),
        "octet_stream_jpeg": (encode(photo, quality=80), "application/octet-stream"),
    }


# --------------------------------------------------------------------------- the server


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
        path = urlsplit(self.path).path
        self.server.begin(path)
        try:
            # The client hanging up early (size cap, deadline) is the point of several routes.
            with contextlib.suppress(OSError, ValueError):
                self._serve(path)
        finally:
            self.server.end()

    def _serve(self, path: str) -> None:
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
        handler(*route[1:])

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

    # -- status codes and redirects
    def route_status(self, code: str) -> None:
        self.reply(int(code), b"<html>error page</html>", "text/html")

    def route_flaky(self, key: str, fail: str) -> None:
        """503 for the first `fail` requests with this key, then a good image."""
        if self.server.hits[f"/flaky/{key}/{fail}"] <= int(fail):
            self.reply(503, b"busy", "text/plain")
        else:
            self.reply(200, jpeg(int(key)))

    def route_loop(self) -> None:
        self.reply(302, b"", "text/plain", Location="/loop")

    def route_redirect(self, *target: str) -> None:
        """/redirect/<scheme>/<rest>: a 302 to scheme://rest (file, ftp, http...)."""
        scheme, rest = target[0], unquote("/".join(target[1:]))  # clients may escape [ ] of IPv6
        self.reply(302, b"", "text/plain", Location=f"{scheme}://{rest}")

    def route_no_location(self) -> None:
        self.reply(302, b"", "text/plain")

    # -- bodies that lie, never end, or never come
    def route_endless(self) -> None:
        """No Content-Length, bytes until the client hangs up (64 MiB at most, so a bug cannot hang CI)."""
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Connection", "close")
        self.end_headers()
        self._close_after()
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
        """Declares 200 bytes of a JPEG, then sends the whole (larger) file."""
        self._close_after()
        self.reply(200, jpeg(7), "image/jpeg", **{"Content-Length": "200"})

    def route_lie_long(self) -> None:
        """Declares 50000 bytes, sends 300 and closes."""
        self._close_after()
        self.reply(200, jpeg(8)[:300], "image/jpeg", **{"Content-Length": "50000"})

    def route_trickle(self) -> None:
        """One byte every 0.1 s without Content-Length: every read succeeds, the whole never ends."""
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Connection", "close")
        self.end_headers()
        self._close_after()
        for byte in jpeg(9)[:400]:
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
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def port(self) -> int:
        return self.server_address[1]

    def handle_error(self, request, client_address) -> None:
        pass  # connections cut on purpose (reset, caps) are not worth a traceback

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

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

    def begin(self, path: str) -> None:
        with self._lock:
            self.hits[path] += 1
            self._in_flight += 1

    def end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight


@contextlib.contextmanager
def running_server() -> Iterator[BadServer]:
    server = BadServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------- workers


def wait_until(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
    """Poll instead of sleeping; exceptions count as "not yet" (Redis may be restarting)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception as exc:  # noqa: BLE001 - a server coming back refuses connections for a while
            last, value = exc, None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last!r})")


def node_name(worker: WorkerProcess) -> str:
    return worker.name.replace("%h", socket.gethostname())


def start_worker(
    settings: Settings,
    log: Path,
    queues: Sequence[str] = ("ingest", "query"),
    concurrency: int = 2,
    env: Mapping[str, str] | None = None,
) -> WorkerProcess:
    """A real `celery worker` subprocess, returned once it answers a ping (and its pool is up)."""
    worker = WorkerProcess(settings, queues, concurrency, log, env=env).start()
    app = celery_app(settings)
    name = node_name(worker)
    try:
        wait_until(
            lambda: not worker.alive() or any(name in r for r in app.control.ping(timeout=0.5) or []),
            timeout=60,
            what="the Celery worker to answer",
        )
        assert worker.alive(), log.read_text()[-3000:]
        wait_until(lambda: len(pool_pids(worker)) == concurrency, timeout=30, what="the prefork pool")
    except BaseException:
        worker.stop()
        raise
    finally:
        app.close()
    return worker


def pool_pids(worker: WorkerProcess) -> set[int]:
    """The prefork children of a worker's main process (Linux /proc)."""
    assert worker.proc is not None
    pids: set[int] = set()
    for task in Path(f"/proc/{worker.proc.pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            pids |= {int(p) for p in (task / "children").read_text().split()}
    return pids


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    return False
