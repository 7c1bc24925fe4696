"""The syslog SIEM sink against real receivers on 127.0.0.1: framing, order, outages, TLS, a stuck peer.

Each test runs the real ``AuditWriter`` (its lanes and spill files) with the sink, on a manual
clock that drives the lanes' backoff; the only real-time waits are a receiver's arrival (bounded)
and the sink's own ``write_timeout`` against a receiver that never reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import ssl
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.audit_trail import record
from tests.conftest import TlsFiles, issue_tls_files
from tests.ocsf_schema import ocsf_errors
from tests.siem_receivers import SyslogReceiver

from portcullis.audit.jsonl import JsonlFileSink
from portcullis.audit.ocsf import MAX_TEXT
from portcullis.audit.siem_syslog import SyslogSink
from portcullis.audit.writer import AuditWriter
from portcullis.config.model import SyslogSiemConfig
from portcullis.errors import StoreUnavailable
from portcullis.stores.base import AuditBatch
from portcullis.testing import ManualClock


def syslog_config(port: int, **extra: Any) -> SyslogSiemConfig:
    fields: dict[str, Any] = {"type": "syslog", "name": "siem", "host": "127.0.0.1", "port": port,
                              "allow_plaintext": True, "connect_timeout": "2s", "write_timeout": "2s", **extra}
    return SyslogSiemConfig.model_validate(fields)


@pytest.fixture
async def receiver() -> AsyncIterator[SyslogReceiver]:
    server = SyslogReceiver()
    await server.start()
    yield server
    with contextlib.suppress(AssertionError):
        await server.stop()


@contextlib.asynccontextmanager
async def writer_with(sinks: dict[str, Any], tmp_path: Path, clock: ManualClock) -> AsyncIterator[AuditWriter]:
    writer = AuditWriter(sinks, spill_path=tmp_path / "spill.jsonl", clock=clock, batch_size=16)
    await writer.start()
    try:
        yield writer
    finally:
        await writer.aclose()


def request_ids(receiver: SyslogReceiver) -> list[str]:
    return [orjson.loads(f.msg)["http_request"]["uid"] for f in receiver.frames if f.msgid == "ocsf-4002"]


async def test_records_arrive_framed_in_order_as_valid_ocsf_events(
    receiver: SyslogReceiver, tmp_path: Path
) -> None:
    clock = ManualClock()
    sink = SyslogSink(syslog_config(receiver.port), base_dir=tmp_path, hostname="gw-1")
    async with writer_with({"siem": sink}, tmp_path, clock) as writer:
        for n in range(40):
            writer.submit(record(clock, n))
        await writer.flush()
        frames = await receiver.wait_for(80)  # each authenticated request: HTTP Activity + Authentication
    assert receiver.errors == [] and len(frames) == 80
    assert request_ids(receiver) == [f"req-{n}" for n in range(40)]
    first = frames[0]
    assert (first.pri, first.hostname, first.app_name, first.msgid) == (13 * 8 + 6, "gw-1", "portcullis", "ocsf-4002")
    assert first.timestamp.endswith("Z") and frames[1].msgid == "ocsf-3002"
    assert all(ocsf_errors(orjson.loads(f.msg)) == [] for f in frames)


async def test_the_native_format_sends_each_sealed_line_exactly(receiver: SyslogReceiver, tmp_path: Path) -> None:
    clock = ManualClock()
    rows = [record(clock, n).to_dict() for n in range(5)]
    batch = AuditBatch.of(rows)
    sink = SyslogSink(syslog_config(receiver.port, format="native"), base_dir=tmp_path)
    await sink.write(batch)
    frames = await receiver.wait_for(5)
    await sink.aclose()
    assert [f.msg for f in frames] == list(batch.lines)
    assert {f.msgid for f in frames} == {"audit-request"}


async def test_records_spill_while_the_receiver_is_down_and_are_replayed_in_order_when_it_is_back(
    receiver: SyslogReceiver, tmp_path: Path
) -> None:
    clock = ManualClock()
    sink = SyslogSink(syslog_config(receiver.port), base_dir=tmp_path)
    async with writer_with({"siem": sink}, tmp_path, clock) as writer:
        for n in range(10):
            writer.submit(record(clock, n))
        await writer.flush()
        await receiver.wait_for(20)
        await receiver.stop()
        for n in range(10, 30):  # the first batch finds the receiver gone; the rest wait behind it
            writer.submit(record(clock, n))
            if n % 5 == 4:
                await writer.flush()
        assert writer.stats.waiting == 20 and writer.stats.failures >= 1 and writer.stats.lost == 0
        await receiver.start()  # back, on the same port
        clock.advance(31)  # past the lane's backoff
        await writer.flush()
        await receiver.wait_for(60)
        assert writer.stats.waiting == 0
    assert receiver.errors == []
    assert request_ids(receiver) == [f"req-{n}" for n in range(30)]  # in order, none lost, none twice


async def test_a_receiver_that_never_reads_costs_no_memory_and_does_not_hold_up_the_file(tmp_path: Path) -> None:
    stuck = SyslogReceiver(read=False)
    await stuck.start()
    clock, stamps = ManualClock(), ManualClock()  # the lane's clock stands still: no retry during the test
    sink = SyslogSink(syslog_config(stuck.port, write_timeout="300ms"), base_dir=tmp_path)
    file_sink = JsonlFileSink(tmp_path / "audit.jsonl", max_bytes=0, backup_count=0)
    big = "u" * 3000  # ~6 KiB of frames per record: the socket buffers fill within a few batches
    audit_log = logging.getLogger("portcullis.audit")
    try:
        async with writer_with({"file": file_sink, "siem": sink}, tmp_path, clock) as writer:
            n = 0
            while writer.stats.failures == 0:  # until the stuck receiver's buffers are full
                for _ in range(64):
                    writer.submit(record(stamps, n, user_agent=big))
                    n += 1
                await writer.flush()
                assert n < 20_000, "the receiver's buffers never filled"
            assert sink.buffered == 0  # the connection was dropped with what it held
            waiting = writer.stats.waiting
            # pytest keeps every log record, and a logged failure holds its batch; a gateway's handlers do not.
            audit_log.disabled = True
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(20):  # 20 more batches (~7 MiB of frames) while the SIEM is stuck
                for _ in range(64):
                    writer.submit(record(stamps, n, user_agent=big))
                    n += 1
                await writer.flush()
            gc.collect()  # garbage waiting for the cycle collector is not memory the sink holds
            grown = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            assert grown < 1 << 20  # they wait on disk, not in memory
            assert writer.stats.waiting == waiting + 20 * 64 and writer.stats.lost == 0
            lines = await asyncio.to_thread(lambda: (tmp_path / "audit.jsonl").read_bytes().count(b"\n"))
            assert lines == n  # the file sink took every record meanwhile
    finally:
        audit_log.disabled = False
        tracemalloc.stop()
        await stuck.stop()


def tls_receiver(files: TlsFiles) -> SyslogReceiver:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(files.cert, files.key)
    return SyslogReceiver(ssl_context=server_context)


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    (tmp_path / "real").mkdir()
    return issue_tls_files(tmp_path / "real")


@pytest.fixture
def other_ca(tmp_path: Path) -> TlsFiles:
    (tmp_path / "other").mkdir()
    return issue_tls_files(tmp_path / "other")


async def test_tls_delivers_to_a_receiver_whose_certificate_the_configured_ca_signed(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    files = tls_files
    receiver = tls_receiver(files)
    await receiver.start()
    rows = [record(ManualClock(), n).to_dict() for n in range(3)]
    sink = SyslogSink(syslog_config(receiver.port, allow_plaintext=False, tls={"ca_file": str(files.ca)}),
                      base_dir=tmp_path)
    try:
        await sink.write(AuditBatch.of(rows))
        frames = await receiver.wait_for(6)
    finally:
        await sink.aclose()
        await receiver.stop()
    assert [orjson.loads(f.msg)["metadata"]["uid"] for f in frames[::2]] == [r["id"] for r in rows]


@pytest.mark.parametrize("mismatch", ["other-ca", "other-name"])
async def test_tls_refuses_a_receiver_the_configured_ca_does_not_vouch_for(
    tmp_path: Path, tls_files: TlsFiles, other_ca: TlsFiles, mismatch: str
) -> None:
    files, other = tls_files, other_ca
    receiver = tls_receiver(files)
    await receiver.start()
    tls: dict[str, Any] = ({"ca_file": str(other.ca)} if mismatch == "other-ca"
                           else {"ca_file": str(files.ca), "server_name": "siem.example"})
    sink = SyslogSink(syslog_config(receiver.port, allow_plaintext=False, tls=tls), base_dir=tmp_path)
    try:
        with pytest.raises(StoreUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            await sink.write(AuditBatch.of([record(ManualClock(), 1).to_dict()]))
    finally:
        await sink.aclose()
        await receiver.stop()
    assert receiver.frames == []


def client_certificate(tmp: Path) -> tuple[Path, Path, Path]:
    """A client CA and a certificate it issued for TLS client authentication: (ca.pem, cert.pem, key.pem)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Portcullis test client CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw-1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tmp / "client-ca.pem", tmp / "client.pem", tmp / "client.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture
def client_cert(tmp_path: Path) -> tuple[Path, Path, Path]:
    return client_certificate(tmp_path)


@pytest.mark.parametrize("presents", [True, False], ids=["with-client-cert", "without-client-cert"])
async def test_a_receiver_that_requires_a_client_certificate_gets_the_configured_one(
    tmp_path: Path, tls_files: TlsFiles, client_cert: tuple[Path, Path, Path], presents: bool
) -> None:
    client_ca, cert, key = client_cert
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
    server_context.load_cert_chain(tls_files.cert, tls_files.key)
    server_context.verify_mode = ssl.CERT_REQUIRED
    # TLS 1.2: the client learns of a refused certificate in the handshake itself (1.3 tells it later).
    server_context.maximum_version = ssl.TLSVersion.TLSv1_2
    receiver = SyslogReceiver(ssl_context=server_context)
    await receiver.start()
    tls: dict[str, Any] = {"ca_file": str(tls_files.ca)}
    if presents:
        tls.update(cert_file=str(cert), key_file=str(key))
    sink = SyslogSink(syslog_config(receiver.port, allow_plaintext=False, tls=tls), base_dir=tmp_path)
    try:
        if presents:
            await sink.write(AuditBatch.of([record(ManualClock(), 1).to_dict()]))
            assert len(await receiver.wait_for(2)) == 2
        else:
            with pytest.raises(StoreUnavailable, match="cannot connect"):
                await sink.write(AuditBatch.of([record(ManualClock(), 1).to_dict()]))
            assert receiver.frames == [] and receiver.connections == 0
    finally:
        await sink.aclose()
        await receiver.stop()


@pytest.mark.parametrize("hostile", [
    pytest.param("/a\n/b\r\n", id="newlines"),
    pytest.param("/x 999 <13>1 2026-01-01T00:00:00Z forged portcullis - - - {}", id="octet-count-forgery"),
    pytest.param("/x\x00\x01\x1b[31m\x7f\u0085\u2028", id="control-characters"),
    pytest.param("/" + "p" * 200_000, id="huge-path"),
])
@pytest.mark.parametrize("fmt", ["ocsf", "native"])
async def test_hostile_values_cannot_split_or_forge_a_frame(
    receiver: SyslogReceiver, tmp_path: Path, hostile: str, fmt: str
) -> None:
    clock = ManualClock()
    rows = [record(clock, 1, path=hostile, query=hostile, user_agent=hostile, consumer_id=None, key_id=None)
            .to_dict(), record(clock, 2).to_dict()]
    sink = SyslogSink(syslog_config(receiver.port, format=fmt), base_dir=tmp_path)
    await sink.write(AuditBatch.of(rows))
    expected = 2 if fmt == "native" else 3  # the second record is authenticated: two events
    frames = await receiver.wait_for(expected)
    await sink.aclose()
    assert receiver.errors == [] and len(frames) == expected
    first = orjson.loads(frames[0].msg)
    if fmt == "native":
        assert first["path"] == hostile and first["user_agent"] == hostile
    else:
        path = first["http_request"]["url"]["path"]
        assert path == (hostile if len(hostile) <= MAX_TEXT else hostile[: MAX_TEXT - 1] + "…")
        assert ocsf_errors(first) == []
    assert orjson.loads(frames[-1].msg)["metadata" if fmt == "ocsf" else "request_id"] is not None
    assert {f.app_name for f in frames} == {"portcullis"}
