"""``SsrfGuard.check_on`` (a route's base parsed once, the path looked at per call) gives the verdict
``check`` gives for the whole URL: the phase-1 shortcut must never let through what the full parse
refuses, nor refuse what it lets through.

Bases include the hostile ones (userinfo, fragments, non-canonical numbers, forbidden characters,
metadata names, ports); paths are any text starting with ``/`` that the shortcut could see.
"""

from __future__ import annotations

import asyncio
from ipaddress import ip_address

from hypothesis import given, settings
from hypothesis import strategies as st

from portcullis.egress.resolver import StaticResolver
from portcullis.egress.ssrf import GuardPolicy, SsrfGuard, UnsafeUrl, parse_egress_url

BASES = [
    "https://api.example.com", "https://api.example.com/v1", "http://api.example.com:8080/base",
    "https://127.0.0.1", "https://10.0.0.1:443/x", "https://[::1]", "https://[2606:4700::1111]/v1",
    "https://user@api.example.com", "https://api.example.com#frag", "https://0177.0.0.1",
    "https://2130706433", "https://metadata.google.internal", "https://api.example.com:22",
    "https://api example.com", "https://api.example.com\\@evil.test", "ftp://api.example.com",
    "https://private.example.com", "https://nowhere.example.com", "https://API.Example.COM./v1",
    "https://api.example.com/v1?fixed=1",
]
RESOLVER = StaticResolver({
    "api.example.com": [[ip_address("93.184.216.34")]],
    "private.example.com": [[ip_address("192.168.1.10")]],
})
POLICIES = [GuardPolicy(), GuardPolicy(allow_http=True, allowed_ports=frozenset({80, 443, 8080})),
            GuardPolicy(allowed_hosts=("api.example.com",))]
PATH = st.text(alphabet=st.sampled_from("/abc.%20?#@:\\&=-_~\x00\x1f\x7f é[]"), max_size=24).map(lambda p: "/" + p)


def _origin(base: str) -> object:
    try:
        return parse_egress_url(base + "/")
    except UnsafeUrl as exc:
        return exc


@settings(max_examples=400, deadline=None)
@given(base=st.sampled_from(BASES), path=PATH, policy=st.sampled_from(POLICIES))
def test_a_route_call_gets_the_verdict_of_its_whole_url(base: str, path: str, policy: GuardPolicy) -> None:
    guard = SsrfGuard(RESOLVER)
    whole = asyncio.run(guard.check(base + path, policy))
    origin = _origin(base)
    shortcut = asyncio.run(guard.check_on(origin, path, policy))  # type: ignore[arg-type]
    assert shortcut.allowed == whole.allowed and shortcut.addresses == whole.addresses
    if not isinstance(origin, UnsafeUrl):  # a base that cannot parse refuses every call, maybe for another reason first
        assert shortcut.reason == whole.reason
