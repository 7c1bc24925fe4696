"""Certificate identities and the rules that map them (``identity/client_certs.py``), on real certificates."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.mtls_certs import Pki

from portcullis.config.tls import CertRuleConfig
from portcullis.errors import Unauthenticated
from portcullis.identity.client_certs import CertMapper, identity_from_der


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def test_a_pinned_fingerprint_maps_that_certificate_and_no_other(pki: Pki) -> None:
    pinned, other = pki.issue("pinned"), pki.issue("other")
    colons = ":".join(pinned.sha256[i:i + 2] for i in range(0, 64, 2)).upper()
    mapper = CertMapper([CertRuleConfig(fingerprints_sha256=[colons], consumer="robot", roles=["batch"])])
    principal = mapper.principal(identity_from_der(pinned.der))
    assert (principal.consumer_id, principal.method, principal.roles) == ("robot", "mtls", frozenset({"batch"}))
    assert principal.key_id == f"sha256:{pinned.sha256}"
    with pytest.raises(Unauthenticated):
        mapper.principal(identity_from_der(other.der))


def test_an_email_san_maps_exactly(pki: Pki) -> None:
    mapper = CertMapper([CertRuleConfig(san_email="ops@example.com")])
    assert mapper.principal(identity_from_der(pki.issue("a", emails=("ops@example.com",)).der)).consumer_id == (
        "ops@example.com")
    with pytest.raises(Unauthenticated):
        mapper.principal(identity_from_der(pki.issue("b", emails=("ops@example.com.evil",)).der))


def test_the_first_matching_rule_wins(pki: Pki) -> None:
    cert = pki.issue("c", dns=("a.internal",), uris=("spiffe://d/x",))
    mapper = CertMapper([CertRuleConfig(san_uri="spiffe://d/x", consumer="first"),
                         CertRuleConfig(san_dns="a.internal", consumer="second")])
    assert mapper.principal(identity_from_der(cert.der)).consumer_id == "first"


def test_an_unreadable_certificate_is_unauthenticated() -> None:
    with pytest.raises(Unauthenticated) as info:
        identity_from_der(b"\x30\x03\x02\x01\x00")
    assert info.value.reason == "client_cert_unreadable"
