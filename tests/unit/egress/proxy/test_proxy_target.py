"""Proxy targets: one reading for every ``CONNECT`` authority and absolute-form URL, or a refusal."""

from __future__ import annotations

import pytest

from portcullis.egress.proxy.target import Authority, TargetRefused, absolute_target, connect_target, origin_target


@pytest.mark.parametrize(("target", "host", "port"), [
    (b"api.example.com:443", "api.example.com", 443),
    (b"API.Example.COM.:8443", "api.example.com", 8443),
    (b"93.184.216.34:443", "93.184.216.34", 443),
    (b"[2606:2800:220:1::1]:443", "2606:2800:220:1::1", 443),
])
def test_a_connect_authority_is_read_canonically(target: bytes, host: str, port: int) -> None:
    assert connect_target(target) == Authority(host, port)


@pytest.mark.parametrize("target", [
    b"user@api.example.com:443", b"api.example.com", b":443", b"api.example.com:", b"api.example.com:0",
    b"api.example.com:65536", b"0x7f.1:443", b"017700000001:443", b"127.1:443", b"[fe80::1%25eth0]:443",
    b"api example.com:443", b"api.example.com:443/x", b"[::1:443", b"http://api.example.com:443",
])
def test_a_connect_authority_read_two_ways_is_refused(target: bytes) -> None:
    with pytest.raises(TargetRefused):
        connect_target(target)


def test_an_absolute_url_keeps_its_path_and_query() -> None:
    parsed = absolute_target(b"http://api.example.com:8080/v1/x?a=1&b=%2F", b"api.example.com:8080")
    assert (parsed.scheme, parsed.host, parsed.port, parsed.path_and_query) == (
        "http", "api.example.com", 8080, "/v1/x?a=1&b=%2F")


def test_a_host_field_naming_the_default_port_matches() -> None:
    assert absolute_target(b"http://api.example.com/", b"API.example.com:80").host == "api.example.com"


@pytest.mark.parametrize(("target", "host"), [
    (b"http://a.example.com/", b"b.example.com"),
    (b"http://a.example.com/", b"a.example.com:81"),
    (b"http://a.example.com/", b"a.example.com/x"),
    (b"http://a.example.com@b.example.com/", None),
    (b"/relative", b"a.example.com"),
    (b"http://a.example.com/\xff", None),
])
def test_an_absolute_target_read_two_ways_is_refused(target: bytes, host: bytes | None) -> None:
    with pytest.raises(TargetRefused):
        absolute_target(target, host)


def test_inside_a_tunnel_the_host_must_be_the_tunnels() -> None:
    tunnel = Authority("llm.example.com", 443)
    assert origin_target(b"/v1/chat?x=1", b"llm.example.com", tunnel) == "/v1/chat?x=1"
    assert origin_target(b"/v1", b"llm.example.com:443", tunnel) == "/v1"
    for target, host in ((b"/v1", b"other.example.com"), (b"/v1", None), (b"http://llm.example.com/v1", b"llm.example.com"),
                         (b"/v1\\x", b"llm.example.com"), (b"/v1", b"llm.example.com:8443")):
        with pytest.raises(TargetRefused):
            origin_target(target, host, tunnel)
