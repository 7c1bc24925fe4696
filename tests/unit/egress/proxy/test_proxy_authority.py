"""The interception CA: its files, what it signs, and the bounded leaf cache."""

from __future__ import annotations

import asyncio
import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from portcullis.egress.proxy.authority import CaUnusable, CertificateAuthority, create_ca
from portcullis.testing import ManualClock

NOW = 1_800_000_000.0


def _ca(tmp_path: Path, **kw: object) -> CertificateAuthority:
    clock = ManualClock(wall=NOW)
    files = create_ca(tmp_path / "ca.pem", tmp_path / "ca.key", common_name="Test CA", days=30, clock=clock,
                      **kw)  # type: ignore[arg-type]
    return CertificateAuthority.load(files.cert_file, files.key_file, clock=clock, max_leaves=2)


def test_the_key_file_is_private_from_its_first_byte(tmp_path: Path) -> None:
    _ca(tmp_path)
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600


def test_an_existing_key_is_never_overwritten_without_force(tmp_path: Path) -> None:
    _ca(tmp_path)
    before = (tmp_path / "ca.key").read_bytes()
    with pytest.raises(FileExistsError):
        create_ca(tmp_path / "ca.pem", tmp_path / "ca.key", common_name="x", days=1, clock=ManualClock(wall=NOW))
    assert (tmp_path / "ca.key").read_bytes() == before


def test_the_ca_signs_leaves_only(tmp_path: Path) -> None:
    _ca(tmp_path)
    cert = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (constraints.ca, constraints.path_length) == (True, 0)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and not usage.digital_signature


def test_a_leaf_names_one_host_for_server_auth_and_verifies_against_the_ca(tmp_path: Path) -> None:
    ca = _ca(tmp_path)
    pem, _ = ca.mint_pem("api.openai.com")
    leaf = x509.load_pem_x509_certificate(pem)
    ca_cert = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    leaf.verify_directly_issued_by(ca_cert)
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["api.openai.com"]
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.not_valid_after_utc == dt.datetime.fromtimestamp(NOW, dt.UTC) + dt.timedelta(days=7)


def test_a_leaf_for_an_address_names_the_address(tmp_path: Path) -> None:
    leaf = x509.load_pem_x509_certificate(_ca(tmp_path).mint_pem("203.0.113.9")[0])
    [address] = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.IPAddress)
    assert str(address) == "203.0.113.9"


def test_a_leaf_never_outlives_its_ca(tmp_path: Path) -> None:
    clock = ManualClock(wall=NOW)
    files = create_ca(tmp_path / "ca.pem", tmp_path / "ca.key", common_name="Short", days=2, clock=clock)
    ca = CertificateAuthority.load(files.cert_file, files.key_file, clock=clock, leaf_days=30)
    leaf = x509.load_pem_x509_certificate(ca.mint_pem("a.example")[0])
    assert leaf.not_valid_after_utc == files.not_after


def test_name_constraints_limit_what_a_client_accepts(tmp_path: Path) -> None:
    ca = _ca(tmp_path, permitted=("openai.com",))
    cert = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    permitted = cert.extensions.get_extension_for_class(x509.NameConstraints).value.permitted_subtrees
    assert permitted == [x509.DNSName("openai.com")]
    store = x509.verification.Store([cert])
    verifier = x509.verification.PolicyBuilder().store(store).time(
        dt.datetime.fromtimestamp(NOW, dt.UTC)).build_server_verifier(x509.DNSName("evil.example"))
    outside = x509.load_pem_x509_certificate(ca.mint_pem("evil.example")[0])
    with pytest.raises(x509.verification.VerificationError):
        verifier.verify(outside, [])
    inside = x509.load_pem_x509_certificate(ca.mint_pem("api.openai.com")[0])
    x509.verification.PolicyBuilder().store(store).time(dt.datetime.fromtimestamp(NOW, dt.UTC)).build_server_verifier(
        x509.DNSName("api.openai.com")).verify(inside, [])


@pytest.mark.parametrize(("setup", "reason"), [
    ("loose-key", "ca_key_readable_by_others"),
    ("missing", "ca_files_unreadable"),
    ("not-a-ca", "not_a_ca"),
    ("expired", "ca_expired"),
], ids=["loose-key", "missing", "not-a-ca", "expired"])
def test_an_unusable_ca_is_refused_at_load(tmp_path: Path, setup: str, reason: str) -> None:
    clock = ManualClock(wall=NOW)
    files = create_ca(tmp_path / "ca.pem", tmp_path / "ca.key", common_name="x", days=1, clock=clock)
    cert_file = files.cert_file
    if setup == "loose-key":
        files.key_file.chmod(0o644)
    elif setup == "missing":
        files.key_file.unlink()
    elif setup == "not-a-ca":
        leaf, leaf_key = CertificateAuthority.load(files.cert_file, files.key_file, clock=clock).mint_pem("x.example")
        cert_file = tmp_path / "leaf.pem"
        cert_file.write_bytes(leaf)
        files.key_file.write_bytes(leaf_key)
    elif setup == "expired":
        clock.advance(2 * 86400)
    with pytest.raises(CaUnusable) as caught:
        CertificateAuthority.load(cert_file, files.key_file, clock=clock)
    assert caught.value.reason == reason


async def test_leaf_contexts_are_cached_and_the_cache_is_bounded(tmp_path: Path) -> None:
    ca = await asyncio.to_thread(_ca, tmp_path)
    first = await ca.context_for("a.example")
    assert await ca.context_for("a.example") is first
    await ca.context_for("b.example")
    await ca.context_for("c.example")
    assert ca.cached == 2  # a.example, the least recently used, went
    assert await ca.context_for("a.example") is not first
    await asyncio.to_thread(ca.close)
