"""Unit-test fixtures: generated images (tests/support/images.py), the local HTTP(S) server that
misbehaves on purpose (tests/support/badserver.py) and a fake DNS resolver."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.badserver import BadServer, running_server
from tests.support.images import GOOD_JPEG, encode, photo_like


@pytest.fixture(scope="session")
def http_server() -> Iterator[BadServer]:
    with running_server() as server:
        yield server


@pytest.fixture(scope="session")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BadServer, str]]:
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
    with running_server(context) as server:
        yield server, str(cert)


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


# The image helpers as fixtures, as the unit tests have always taken them (tests.support.images).
@pytest.fixture(scope="session")
def make_photo():
    return photo_like


@pytest.fixture(scope="session")
def encode_image():
    return encode


@pytest.fixture(scope="session")
def good_jpeg() -> bytes:
    return GOOD_JPEG
