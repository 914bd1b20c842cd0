"""common.fetch: scheme, host and path policy, redirects, status codes, body limits, retries.

The misbehaving server lives on 127.0.0.1, so tests of body handling use allow_private=True; tests
of the host policy itself use literal addresses (no DNS) or a fake resolver."""

from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path

import pytest
import requests

from common.config.settings import Settings
from common.errors import FetchError
from common.fetch import http as fetch_http
from common.fetch import policy as fetch_module
from common.fetch.guarded import fetch, fetch_with_retries
from common.fetch.http import make_session
from common.fetch.policy import FetchPolicy, check_url

LOCAL = FetchPolicy(allow_private=True, max_bytes=256 * 1024, connect_timeout=2, read_timeout=2, deadline=5)
STRICT = FetchPolicy(allow_private=False)


def fails(reason: str, call, *args, permanent: bool | None = None, **kwargs) -> FetchError:
    with pytest.raises(FetchError) as info:
        call(*args, **kwargs)
    assert info.value.reason == reason, info.value
    if permanent is not None:
        assert info.value.permanent is permanent
    return info.value


def test_policy_from_settings_maps_every_field(tmp_path: Path) -> None:
    settings = Settings(
        allow_private_urls=True,
        file_roots=(tmp_path,),
        max_download_bytes=123,
        connect_timeout=1.5,
        read_timeout=2.5,
        download_deadline=9.0,
        max_redirects=2,
    )
    assert FetchPolicy.from_settings(settings) == FetchPolicy(
        allow_private=True,
        file_roots=(tmp_path,),
        max_bytes=123,
        connect_timeout=1.5,
        read_timeout=2.5,
        deadline=9.0,
        max_redirects=2,
    )


# --------------------------------------------------------------------------- good answers


def test_fetches_a_jpeg(http_server, good_jpeg: bytes) -> None:
    assert fetch(http_server.url("/image"), LOCAL) == good_jpeg


@pytest.mark.parametrize(
    "path", ["/typed", "/typed/application/octet-stream", "/typed/binary/octet-stream", "/typed/image/webp"]
)
def test_missing_or_generic_content_type_is_left_to_the_decoder(http_server, good_jpeg, path) -> None:
    assert fetch(http_server.url(path), LOCAL) == good_jpeg


def test_reused_session_fetches_repeatedly(http_server, good_jpeg) -> None:
    with make_session(LOCAL) as session:
        assert session.headers["User-Agent"] == "neardup/0.1"
        assert [fetch(http_server.url("/image"), LOCAL, session) for _ in range(3)] == [good_jpeg] * 3


# --------------------------------------------------------------------------- statuses and types


@pytest.mark.parametrize("code", [400, 401, 403, 404, 410])
def test_client_errors_are_permanent(http_server, code: int) -> None:
    fails(f"http_{code}", fetch, http_server.url(f"/status/{code}"), LOCAL, permanent=True)


@pytest.mark.parametrize("code", [429, 500, 502, 503])
def test_throttling_and_server_errors_are_transient(http_server, code: int) -> None:
    fails(f"http_{code}", fetch, http_server.url(f"/status/{code}"), LOCAL, permanent=False)


def test_html_page_with_200_is_not_an_image(http_server) -> None:
    fails("not_image", fetch, http_server.url("/html"), LOCAL, permanent=True)


@pytest.mark.parametrize("ctype", ["application/json", "text/plain", "video/mp4"])
def test_clearly_wrong_content_type_is_not_an_image(http_server, ctype: str) -> None:
    fails("not_image", fetch, http_server.url(f"/typed/{ctype}"), LOCAL, permanent=True)


def test_zero_byte_body_is_empty(http_server) -> None:
    fails("empty", fetch, http_server.url("/empty"), LOCAL, permanent=True)


def test_redirect_without_location_is_a_permanent_http_error(http_server) -> None:
    fails("http_302", fetch, http_server.url("/no-location"), LOCAL, permanent=True)


def test_refused_connection_is_transient() -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fails("connect_error", fetch, f"http://127.0.0.1:{port}/x.jpg", LOCAL, permanent=False)


# --------------------------------------------------------------------------- body limits


def test_declared_huge_body_is_refused_before_reading(http_server) -> None:
    start = time.monotonic()
    fails("too_large", fetch, http_server.url("/declared-huge"), LOCAL, permanent=True)
    assert time.monotonic() - start < 1.0


def test_endless_body_without_length_stops_at_the_cap(http_server) -> None:
    start = time.monotonic()
    fails("too_large", fetch, http_server.url("/endless"), LOCAL, permanent=True)
    assert time.monotonic() - start < 2.0


def test_body_longer_than_declared_is_cut_at_the_declared_length(http_server, good_jpeg) -> None:
    # Given a server declaring 100 bytes and sending 2 MiB, we never read past what was declared.
    assert fetch(http_server.url("/lie-short"), LOCAL) == good_jpeg[:100]


def test_body_shorter_than_declared_is_truncated(http_server) -> None:
    fails("truncated", fetch, http_server.url("/lie-long"), LOCAL, permanent=False)


def test_trickling_body_hits_the_total_deadline(http_server) -> None:
    # Given a server that sends one byte every 0.2 s (each read well inside read_timeout),
    policy = FetchPolicy(allow_private=True, read_timeout=5, deadline=1.0)
    start = time.monotonic()
    # then the total deadline ends the download, not the per-read timeout.
    fails("timeout", fetch, http_server.url("/trickle"), policy, permanent=False)
    assert 0.9 < time.monotonic() - start < 2.0


def test_stalled_body_hits_the_read_timeout(http_server) -> None:
    policy = FetchPolicy(allow_private=True, read_timeout=0.3, deadline=10)
    start = time.monotonic()
    fails("timeout", fetch, http_server.url("/stall"), policy, permanent=False)
    assert time.monotonic() - start < 2.0


# --------------------------------------------------------------------------- redirects


def test_redirects_are_followed_up_to_the_limit(http_server, good_jpeg) -> None:
    policy = FetchPolicy(allow_private=True, max_redirects=3)
    assert fetch(http_server.url("/chain/3"), policy) == good_jpeg
    fails("too_many_redirects", fetch, http_server.url("/chain/4"), policy, permanent=True)


def test_redirect_loop_is_cut(http_server) -> None:
    before = http_server.hits["/loop"]
    fails("too_many_redirects", fetch, http_server.url("/loop"), LOCAL, permanent=True)
    assert http_server.hits["/loop"] - before == LOCAL.max_redirects + 1


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://example.com/a.jpg", "gopher://x/"])
def test_redirect_to_another_scheme_is_refused(http_server, target: str) -> None:
    # Even with allow_private: a scheme change is never followed.
    url = http_server.url("/redirect?" + requests.compat.urlencode({"to": target}))
    fails("bad_scheme", fetch, url, LOCAL, permanent=True)


# --------------------------------------------------------------------------- host policy, no DNS

BLOCKED = [
    "http://127.0.0.1/a.jpg",
    "http://127.0.0.53:8080/",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://0.0.0.0/",
    "http://0/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://192.0.2.10/",  # documentation range
    "http://2130706433/",  # 127.0.0.1 as one decimal number
    "http://0x7f000001/",  # ... in hex
    "http://0177.0.0.1/",  # ... in octal
    "http://127.1/",  # ... abbreviated
    "http://0x0a.0.0.1/",  # 10.0.0.1, mixed spelling
    "https://[::1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "http://[::ffff:a9fe:a9fe]/",  # mapped 169.254.169.254, hex spelling
    "http://[::127.0.0.1]/",  # IPv4-compatible (deprecated)
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fec0::1]/",  # site-local
    "http://[ff02::1]/",
    "http://[2002:7f00:1::]/",  # 6to4 wrapping 127.0.0.1
    "http://[64:ff9b::a00:1]/",  # NAT64 wrapping 10.0.0.1
]


@pytest.mark.parametrize("url", BLOCKED)
def test_non_public_literal_addresses_are_blocked(url: str, fake_dns) -> None:
    dns = fake_dns({})  # any lookup would be a bug: literal addresses need no DNS
    fails("blocked_address", check_url, url, STRICT, permanent=True)
    assert dns.lookups == []


@pytest.mark.parametrize(
    "url", ["http://93.184.216.34/a.jpg", "https://8.8.8.8:8443/", "http://[2606:4700:4700::1111]/"]
)
def test_public_literal_addresses_pass(url: str, fake_dns) -> None:
    dns = fake_dns({})
    assert len(check_url(url, STRICT)) == 1
    assert dns.lookups == []


def test_allow_private_lifts_the_host_policy() -> None:
    assert check_url("http://127.0.0.1/", FetchPolicy(allow_private=True)) == []


def test_localhost_by_name_is_blocked() -> None:
    fails("blocked_address", check_url, "http://localhost/", STRICT)


def test_a_name_with_any_private_address_is_blocked(fake_dns) -> None:
    fake_dns({"mixed.example": ["93.184.216.34", "10.0.0.7"], "ok.example": ["93.184.216.34"]})
    fails("blocked_address", check_url, "http://mixed.example/a.jpg", STRICT)
    assert check_url("http://ok.example/a.jpg", STRICT) == ["93.184.216.34"]


def test_unknown_name_is_a_permanent_dns_error(fake_dns) -> None:
    fake_dns({})
    fails("dns_error", check_url, "http://nowhere.example/", STRICT, permanent=True)


def test_classifier_unwraps_embedded_ipv4() -> None:
    assert fetch_module.is_public_address(ipaddress.ip_address("::ffff:93.184.216.34"))
    assert not fetch_module.is_public_address(ipaddress.ip_address("::ffff:192.168.0.1"))


@pytest.mark.parametrize(
    "source", ["ftp://example.com/a.jpg", "gopher://example.com/", "data:image/png;base64,AAAA", "dict://x/"]
)
def test_other_schemes_are_refused(source: str) -> None:
    fails("bad_scheme", fetch, source, STRICT, permanent=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pw@93.184.216.34/",  # credentials: also the "evil.com@127.0.0.1" confusion
        "http://93.184.216.34\\@127.0.0.1/",  # backslash: parsers disagree on the host
        "http:///a.jpg",
        "http://93.184.216.34:99999/",
        "http://999.1.1.1/",
        "http://93.184.216.34/a b.jpg",
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    fails("bad_url", fetch, url, STRICT, permanent=True)


def test_empty_source_is_refused() -> None:
    fails("bad_url", fetch, "  ", STRICT)


# --------------------------------------------------------------------------- host policy with a server


def test_loopback_server_is_blocked_before_any_request(http_server) -> None:
    before = sum(http_server.hits.values())
    fails("blocked_address", fetch, http_server.url("/image"), STRICT)
    # A plain caller-supplied session gets the same pre-check.
    fails("blocked_address", fetch, http_server.url("/image"), STRICT, requests.Session())
    assert sum(http_server.hits.values()) == before


@pytest.fixture
def public_loopback(monkeypatch: pytest.MonkeyPatch, fake_dns):
    """Pretend 127.0.0.1 (and only it) is a public CDN named cdn.example, so the guarded path can be
    exercised end to end against the local server. Every other address keeps the real verdict."""
    real = fetch_module.is_public_address
    monkeypatch.setattr(
        fetch_module, "is_public_address", lambda ip: ip == ipaddress.ip_address("127.0.0.1") or real(ip)
    )
    return fake_dns({"cdn.example": ["127.0.0.1"]})


def test_guarded_session_connects_to_the_checked_address(http_server, public_loopback, good_jpeg) -> None:
    # Given a public-looking name, when fetched with the strict policy,
    assert fetch(http_server.url("/image", host="cdn.example"), STRICT) == good_jpeg
    # then the request went to the checked address with the name kept in the Host header,
    assert http_server.hosts[-1] == f"cdn.example:{http_server.port}"
    # and the name was resolved twice: the pre-check and the connect-time guard.
    assert public_loopback.lookups_of("cdn.example") == ["cdn.example", "cdn.example"]


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/a.jpg",
        "http://[::1]/",
        "http://0x7f000002/",
    ],
)
def test_redirect_from_public_name_to_private_address_is_blocked(
    http_server, public_loopback, monkeypatch, target
) -> None:
    url = http_server.url("/redirect?" + requests.compat.urlencode({"to": target}), host="cdn.example")
    checked: list[str] = []
    real_check = fetch_http.check_url
    monkeypatch.setattr(fetch_http, "check_url", lambda u, p: checked.append(u) or real_check(u, p))
    before = http_server.hits["/redirect"]
    error = fails("blocked_address", fetch, url, STRICT, permanent=True)
    # The first hop was allowed and answered; the Location hop is what the policy refused,
    assert http_server.hits["/redirect"] - before == 1
    assert "is not a public address" in error.detail
    # and it was refused by the per-hop check, before the connect-time guard had to step in.
    assert checked == [url, target]


def test_guarded_https_keeps_the_name_for_sni_and_certificate_checks(
    https_server, public_loopback, good_jpeg
):
    # Given a TLS server whose certificate names cdn.example, reached through the pinned address,
    server, ca_file = https_server
    public_loopback.answers["other.example"] = ["127.0.0.1"]
    with make_session(STRICT) as session:
        session.verify = ca_file
        # then the certificate is checked against the name, not the address we connected to,
        assert fetch(server.url("/image", host="cdn.example"), STRICT, session) == good_jpeg
        # and a name the certificate does not cover still fails verification.
        error = fails("tls_error", fetch, server.url("/image", host="other.example"), STRICT, session)
        assert error.permanent  # a certificate that does not fit will not fit next time either


def test_dns_rebinding_is_caught_at_connect_time(http_server, fake_dns) -> None:
    # Given a name that resolves to a public address for the check and to loopback a moment later,
    dns = fake_dns({"rebind.example": [["93.184.216.34"], ["127.0.0.1"]]})
    before = sum(http_server.hits.values())
    # when fetched, the connect-time guard sees the second answer and refuses,
    fails("blocked_address", fetch, http_server.url("/image", host="rebind.example"), STRICT)
    assert dns.lookups_of("rebind.example") == ["rebind.example", "rebind.example"]
    # and no request reached the server.
    assert sum(http_server.hits.values()) == before


# --------------------------------------------------------------------------- local files


@pytest.fixture
def roots(tmp_path: Path, good_jpeg: bytes) -> tuple[Path, Path]:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "a.jpg").write_bytes(good_jpeg)
    (outside / "secret.jpg").write_bytes(b"secret")
    return root, outside


def test_reads_files_inside_a_root_by_path_and_file_url(roots, good_jpeg) -> None:
    root, _ = roots
    policy = FetchPolicy(file_roots=(root,))
    assert fetch(str(root / "a.jpg"), policy) == good_jpeg
    assert fetch((root / "a.jpg").as_uri(), policy) == good_jpeg
    assert fetch("file://localhost" + str(root / "a.jpg"), policy) == good_jpeg


def test_files_outside_roots_are_refused(roots) -> None:
    root, outside = roots
    policy = FetchPolicy(file_roots=(root,))
    fails("path_not_allowed", fetch, str(outside / "secret.jpg"), policy, permanent=True)
    fails("path_not_allowed", fetch, (outside / "secret.jpg").as_uri(), policy)
    fails("path_not_allowed", fetch, f"{root}/../outside/secret.jpg", policy)
    fails("path_not_allowed", fetch, "file://" + str(root) + "/%2e%2e/outside/secret.jpg", policy)
    fails("path_not_allowed", fetch, str(root / "a.jpg"), FetchPolicy())  # no roots configured


def test_symlink_escaping_a_root_is_refused(roots, good_jpeg) -> None:
    root, outside = roots
    (root / "escape.jpg").symlink_to(outside / "secret.jpg")
    (root / "linked-dir").symlink_to(outside, target_is_directory=True)
    (root / "inside.jpg").symlink_to(root / "a.jpg")
    policy = FetchPolicy(file_roots=(root,))
    fails("path_not_allowed", fetch, str(root / "escape.jpg"), policy)
    fails("path_not_allowed", fetch, str(root / "linked-dir" / "secret.jpg"), policy)
    assert fetch(str(root / "inside.jpg"), policy) == good_jpeg  # a link that stays inside is fine


def test_missing_file_is_not_found_only_inside_roots(roots) -> None:
    root, outside = roots
    policy = FetchPolicy(file_roots=(root,))
    fails("not_found", fetch, str(root / "missing.jpg"), policy, permanent=True)
    # Outside the roots the answer does not reveal whether the file exists.
    fails("path_not_allowed", fetch, str(outside / "missing.jpg"), policy)


def test_file_size_cap_empty_file_and_directory(roots) -> None:
    root, _ = roots
    (root / "big.jpg").write_bytes(b"\xff" * 2048)
    (root / "zero.jpg").write_bytes(b"")
    (root / "sub").mkdir()
    policy = FetchPolicy(file_roots=(root,), max_bytes=1024)
    fails("too_large", fetch, str(root / "big.jpg"), policy, permanent=True)
    fails("empty", fetch, str(root / "zero.jpg"), policy, permanent=True)
    fails("not_a_file", fetch, str(root / "sub"), policy)


def test_fifo_under_a_root_does_not_hang(roots) -> None:
    root, _ = roots
    os.mkfifo(root / "pipe.jpg")
    fails("not_a_file", fetch, str(root / "pipe.jpg"), FetchPolicy(file_roots=(root,)))


def test_file_url_with_a_remote_host_is_refused(roots) -> None:
    root, _ = roots
    fails("bad_url", fetch, "file://fileserver" + str(root / "a.jpg"), FetchPolicy(file_roots=(root,)))


# --------------------------------------------------------------------------- retries


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_transient_errors_are_retried_with_growing_jittered_backoff(http_server, good_jpeg) -> None:
    sleeps = Sleeps()
    url = http_server.url("/flaky?key=retry-ok&fail=2")
    assert fetch_with_retries(url, LOCAL, retries=3, backoff=0.5, sleep=sleeps) == good_jpeg
    assert len(sleeps) == 2
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0


def test_retries_give_up_with_the_last_error(http_server) -> None:
    sleeps = Sleeps()
    before = http_server.hits["/status/503"]
    fails("http_503", fetch_with_retries, http_server.url("/status/503"), LOCAL, 2, sleep=sleeps)
    assert http_server.hits["/status/503"] - before == 3
    assert len(sleeps) == 2


def test_permanent_errors_are_not_retried(http_server) -> None:
    sleeps = Sleeps()
    before = http_server.hits["/status/404"]
    fails("http_404", fetch_with_retries, http_server.url("/status/404"), LOCAL, 5, sleep=sleeps)
    assert http_server.hits["/status/404"] - before == 1
    assert sleeps == []
