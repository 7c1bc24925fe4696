"""The guard's resolvers: the system's (asked only for localhost, answered from /etc/hosts: tests send
no DNS traffic) and fixed answers."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from portcullis.egress.resolver import StaticResolver, SystemResolver, parse_resolve_option


async def test_the_system_resolver_returns_every_address_once() -> None:
    answers = await SystemResolver().resolve("localhost")
    assert ip_address("127.0.0.1") in answers
    assert len(answers) == len(set(answers))


async def test_fixed_answers_play_a_rebinding_server_in_turn() -> None:
    r = StaticResolver({"a.example": [[ip_address("93.184.216.34")], [ip_address("127.0.0.1")]]})
    assert await r.resolve("A.example") == [ip_address("93.184.216.34")]
    assert await r.resolve("a.example") == [ip_address("127.0.0.1")]
    assert await r.resolve("a.example") == [ip_address("127.0.0.1")]  # the last answer repeats
    with pytest.raises(OSError, match="no answer"):
        await r.resolve("b.example")


def test_resolve_options_parse_like_curls() -> None:
    r = parse_resolve_option(["api.example.=1.2.3.4, 2001:4860::1", "api.example=5.6.7.8"])
    assert r._answers["api.example"] == [[ip_address("1.2.3.4"), ip_address("2001:4860::1")],
                                         [ip_address("5.6.7.8")]]
    for bad in ["api.example", "=1.2.3.4", "api.example=", "api.example=nope"]:
        with pytest.raises(ValueError, match=r"HOST=IP|does not appear"):
            parse_resolve_option([bad])
