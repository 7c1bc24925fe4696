"""SSRF: URLs an agent or a prompt may hand the egress door, and what the guard answers.

Sources, named in each case's id: OWASP SSRF Prevention Cheat Sheet and API7:2023 (server side
request forgery), PortSwigger "URL validation bypass cheat sheet", PayloadsAllTheThings "Server
Side Request Forgery" (IP encodings, IPv6 forms, DNS names that point home), cloud metadata
documentation (AWS IMDS 169.254.169.254 and fd00:ec2::254, GCP metadata.google.internal, Alibaba
100.100.100.200, Azure), RFC 6052 (NAT64), RFC 3056 (6to4), RFC 4380 (Teredo), RFC 6598 (CGNAT),
CVE-2021-29921 (Python ipaddress leading zeros read as decimal), Capital One 2019 (metadata SSRF).

The guard is tested through its injectable resolver: no test here sends a packet.
"""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from portcullis.egress.resolver import StaticResolver
from portcullis.egress.ssrf import GuardPolicy, SsrfGuard

PUBLIC_V4 = ip_address("93.184.216.34")
ANSWERS = {
    "public.example": [[PUBLIC_V4]],
    "api.github.com": [[ip_address("140.82.112.6")]],
    "api.stripe.com": [[ip_address("54.187.174.169"), ip_address("2600:1f14:e22:d400::1")]],
    "xn--bcher-kva.example": [[PUBLIC_V4]],
    "localhost": [[ip_address("127.0.0.1"), ip_address("::1")]],
    "localtest.me": [[ip_address("127.0.0.1")]],
    "127.0.0.1.nip.io": [[ip_address("127.0.0.1")]],
    "169.254.169.254.nip.io": [[ip_address("169.254.169.254")]],
    "metadata.google.internal": [[ip_address("169.254.169.254")]],
    "mixed.example": [[PUBLIC_V4, ip_address("10.0.0.1")]],
    "v6private.example": [[ip_address("fd12:3456::1")]],
    "mapped.example": [[ip_address("::ffff:10.1.2.3")]],
    "internal.corp.example": [[ip_address("10.20.30.40")]],
}

# Every case: (url, reason the guard must give). The policy allows plain http so that address
# checks, not the scheme, are what refuse the http:// forms; https_required has its own test.
BLOCKED = [
    # IPv4 literals and their encodings (PayloadsAllTheThings, PortSwigger, CVE-2021-29921)
    pytest.param("http://127.0.0.1/", "address_loopback", id="loopback"),
    pytest.param("http://127.1/", "non_canonical_ip", id="short-form-127.1"),
    pytest.param("http://0177.0.0.1/", "non_canonical_ip", id="octal-0177"),
    pytest.param("http://0x7f.0.0.1/", "non_canonical_ip", id="hex-octet"),
    pytest.param("http://0x7f000001/", "non_canonical_ip", id="hex-dword"),
    pytest.param("http://2130706433/", "non_canonical_ip", id="decimal-dword"),
    pytest.param("http://017700000001/", "non_canonical_ip", id="octal-dword"),
    pytest.param("http://127.000.000.001/", "non_canonical_ip", id="CVE-2021-29921-zero-padded"),
    pytest.param("http://0/", "non_canonical_ip", id="zero"),
    pytest.param("http://0.0.0.0/", "address_unspecified", id="unspecified"),
    pytest.param("http://10.0.0.1/", "address_private", id="rfc1918-10"),
    pytest.param("http://172.16.0.1/", "address_private", id="rfc1918-172"),
    pytest.param("http://192.168.1.1/", "address_private", id="rfc1918-192"),
    pytest.param("http://169.254.169.254/latest/meta-data/", "address_link_local", id="aws-imds"),
    pytest.param("http://100.100.100.200/latest/meta-data/", "address_shared_address_space", id="alibaba-metadata"),
    pytest.param("http://100.64.0.1/", "address_shared_address_space", id="rfc6598-cgnat"),
    pytest.param("http://192.0.0.1/", "address_private", id="ietf-protocol-assignments"),
    pytest.param("http://198.18.0.1/", "address_private", id="benchmarking"),
    pytest.param("http://192.0.2.1/", "address_private", id="documentation-test-net-1"),
    pytest.param("http://203.0.113.5/", "address_private", id="documentation-test-net-3"),
    pytest.param("http://224.0.0.1/", "address_multicast", id="multicast"),
    pytest.param("http://255.255.255.255/", "address_private", id="broadcast"),
    pytest.param("http://240.0.0.1/", "address_private", id="reserved-class-e"),
    pytest.param("https://93.184.216.34:22/", "port_not_allowed", id="public-ip-odd-port"),
    pytest.param("http://①②⑦.⓪.⓪.①/", "non_canonical_ip", id="portswigger-enclosed-alphanumerics"),
    # IPv6 forms and IPv4 embeddings
    pytest.param("http://[::1]/", "address_loopback", id="v6-loopback"),
    pytest.param("http://[0:0:0:0:0:0:0:1]/", "address_loopback", id="v6-loopback-long"),
    pytest.param("http://[::]/", "address_unspecified", id="v6-unspecified"),
    pytest.param("http://[::ffff:127.0.0.1]/", "address_embedded_loopback", id="v4-mapped-loopback"),
    pytest.param("http://[::ffff:7f00:1]/", "address_embedded_loopback", id="v4-mapped-hex"),
    pytest.param("http://[::ffff:169.254.169.254]/", "address_embedded_link_local", id="v4-mapped-imds"),
    pytest.param("http://[::127.0.0.1]/", "address_embedded_loopback", id="v4-compatible"),
    pytest.param("http://[64:ff9b::7f00:1]/", "address_embedded_loopback", id="rfc6052-nat64-loopback"),
    pytest.param("http://[64:ff9b::a9fe:a9fe]/", "address_embedded_link_local", id="rfc6052-nat64-imds"),
    pytest.param("http://[2002:7f00:1::]/", "address_embedded_loopback", id="rfc3056-6to4-loopback"),
    pytest.param("http://[2002:a9fe:a9fe::]/", "address_embedded_link_local", id="rfc3056-6to4-imds"),
    pytest.param("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "address_embedded_loopback", id="rfc4380-teredo"),
    pytest.param("http://[fd00:ec2::254]/latest/meta-data/", "address_private", id="aws-imds-v6"),
    pytest.param("http://[fc00::1]/", "address_private", id="unique-local"),
    pytest.param("http://[fe80::1]/", "address_link_local", id="v6-link-local"),
    pytest.param("http://[fe80::1%25eth0]/", "ipv6_zone_id", id="v6-zone-id"),
    pytest.param("http://[ff02::1]/", "address_multicast", id="v6-multicast"),
    pytest.param("http://[2001:db8::1]/", "address_private", id="v6-documentation"),
    pytest.param("http://::1/", "malformed_url", id="unbracketed-v6"),
    # Names that point home, and metadata names
    pytest.param("http://localhost/", "address_loopback", id="localhost"),
    pytest.param("http://LOCALHOST./", "address_loopback", id="localhost-absolute-upper"),
    pytest.param("http://localtest.me/", "address_loopback", id="public-name-to-loopback"),
    pytest.param("http://127.0.0.1.nip.io/", "address_loopback", id="wildcard-dns-loopback"),
    pytest.param("http://169.254.169.254.nip.io/", "address_link_local", id="wildcard-dns-imds"),
    pytest.param("http://metadata.google.internal/computeMetadata/v1/", "metadata_host", id="gcp-metadata"),
    pytest.param("http://METADATA.GOOGLE.INTERNAL./", "metadata_host", id="gcp-metadata-absolute-upper"),
    pytest.param("http://metadata/", "metadata_host", id="gcp-metadata-short"),
    pytest.param("http://instance-data/latest/meta-data/", "metadata_host", id="aws-instance-data"),
    pytest.param("http://metadata.azure.internal/", "metadata_host", id="azure-metadata"),
    pytest.param("http://mixed.example/", "address_private", id="one-private-answer-among-public"),
    pytest.param("http://v6private.example/", "address_private", id="aaaa-private"),
    pytest.param("http://mapped.example/", "address_embedded_private", id="aaaa-v4-mapped-private"),
    pytest.param("http://nxdomain.example/", "resolution_failed", id="nxdomain"),
    # Parser differentials (PortSwigger URL validation bypass; Orange Tsai "A New Era of SSRF")
    pytest.param("http://public.example@127.0.0.1/", "userinfo_not_allowed", id="userinfo-at"),
    pytest.param("http://user:pass@public.example/", "userinfo_not_allowed", id="userinfo-credentials"),
    pytest.param("http://127.0.0.1#@public.example/", "fragment_not_allowed", id="fragment-at"),
    pytest.param("http://public.example\\@127.0.0.1/", "forbidden_character", id="backslash-at"),
    pytest.param("http://public.example%2f@127.0.0.1/", "userinfo_not_allowed", id="encoded-slash-userinfo"),
    pytest.param("http://127.0.0.1%00.public.example/", "malformed_host", id="encoded-nul-in-host"),
    pytest.param("http://127.0.0.1 /", "forbidden_character", id="space-in-host"),
    pytest.param("http://public.example\t/", "forbidden_character", id="tab"),
    pytest.param("http:/127.0.0.1/", "missing_host", id="one-slash"),
    pytest.param("http:///127.0.0.1/", "missing_host", id="three-slashes"),
    pytest.param("//127.0.0.1/", "scheme_not_allowed", id="scheme-relative"),
    pytest.param("file:///etc/passwd", "scheme_not_allowed", id="file-scheme"),
    pytest.param("gopher://127.0.0.1:6379/_INFO", "scheme_not_allowed", id="gopher-redis"),
    pytest.param("dict://127.0.0.1:11211/stat", "scheme_not_allowed", id="dict-memcached"),
    pytest.param("ftp://public.example/", "scheme_not_allowed", id="ftp"),
    pytest.param("jar:http://public.example!/", "scheme_not_allowed", id="jar"),
    pytest.param("http://public.example:99999/", "malformed_url", id="port-out-of-range"),
]

ALLOWED = [
    pytest.param("https://api.github.com/repos/acme/app/issues?state=open", id="github"),
    pytest.param("https://api.stripe.com/v1/charges", id="stripe-v4-and-v6"),
    pytest.param("https://public.example/", id="public-name"),
    pytest.param("https://PUBLIC.EXAMPLE./path?q=1", id="public-absolute-upper"),
    pytest.param("https://93.184.216.34/", id="public-v4-literal"),
    pytest.param("https://[2606:4700:4700::1111]/", id="public-v6-literal"),
    pytest.param("https://xn--bcher-kva.example/", id="punycode"),
    pytest.param("https://bücher.example/", id="idn"),
    pytest.param("https://public.example:443/", id="explicit-port"),
]


@pytest.fixture
def guard() -> SsrfGuard:
    return SsrfGuard(StaticResolver(ANSWERS))


LENIENT = GuardPolicy(allow_http=True)


@pytest.mark.parametrize(("url", "reason"), BLOCKED)
async def test_a_bypass_attempt_is_refused_with_its_reason(guard: SsrfGuard, url: str, reason: str) -> None:
    verdict = await guard.check(url, LENIENT)
    assert (verdict.allowed, verdict.reason) == (False, reason)


@pytest.mark.parametrize("url", ALLOWED)
async def test_a_public_destination_passes_with_the_addresses_to_pin(guard: SsrfGuard, url: str) -> None:
    verdict = await guard.check(url, GuardPolicy())
    assert verdict.allowed, verdict.reason
    assert verdict.addresses and verdict.target is not None


def test_the_table_is_as_large_as_the_issue_asks() -> None:
    assert len(BLOCKED) + len(ALLOWED) >= 60


async def test_plain_http_needs_the_route_to_allow_it(guard: SsrfGuard) -> None:
    assert (await guard.check("http://public.example/", GuardPolicy())).reason == "https_required"
    assert (await guard.check("http://public.example/", GuardPolicy(allow_http=True))).allowed


async def test_dns_rebinding_cannot_change_a_pinned_answer() -> None:
    # First answer public, every later one private: the verdict pins the first, checked answer,
    # and the guard asks the resolver exactly once per check (no second lookup to win a race on).
    resolver = StaticResolver({"rebind.example": [[PUBLIC_V4], [ip_address("127.0.0.1")]]})
    guard = SsrfGuard(resolver)
    first = await guard.check("https://rebind.example/", GuardPolicy())
    assert first.allowed and first.addresses == (PUBLIC_V4,)
    assert resolver.lookups == ["rebind.example"]
    second = await guard.check("https://rebind.example/", GuardPolicy())
    assert (second.allowed, second.reason) == (False, "address_loopback")


async def test_a_domain_allow_list_admits_exact_names_and_subdomains_only(guard: SsrfGuard) -> None:
    policy = GuardPolicy(allowed_hosts=("api.github.com", "*.stripe.com"))
    assert (await guard.check("https://api.github.com/", policy)).allowed
    assert (await guard.check("https://api.stripe.com/", policy)).allowed
    assert (await guard.check("https://public.example/", policy)).reason == "host_not_allowed"
    assert (await guard.check("https://stripe.com.public.example/", policy)).reason == "host_not_allowed"


async def test_an_explicit_network_exception_reaches_an_on_premises_api(guard: SsrfGuard) -> None:
    policy = GuardPolicy(allowed_networks=(ip_network("10.20.0.0/16"),))
    allowed = await guard.check("https://internal.corp.example/", policy)
    assert allowed.allowed and allowed.addresses == (ip_address("10.20.30.40"),)
    # the exception is that network only: the rest of RFC 1918 stays closed
    assert (await guard.check("https://10.0.0.1/", policy)).reason == "address_private"
    # and it never opens metadata names
    assert (await guard.check("https://metadata.google.internal/", policy)).reason == "metadata_host"
