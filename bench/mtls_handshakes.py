"""Mutual-TLS connections per second on one core: a full handshake with a client certificate, then one request.

Why a probe of its own: ``bench.run`` measures kept-alive traffic, where a handshake is paid once
per connection. Clients that open a connection per request (cron jobs, short-lived workers, a mesh
that does not pool) pay it every time, and with mutual TLS the gateway also verifies the client's
chain and maps its certificate. This starts nginx (the upstream, CPU 1) and ``portcullis serve``
pinned to CPU 0, in two setups measured in alternation:

- ``tls``: server-authenticated TLS 1.3, a public route (``auth: none``);
- ``mtls``: the same plus ``client_auth: required`` against a client CA and an ``auth.mtls`` route
  mapping the certificate by its DNS SAN (audit on, as in production).

Load: ``--clients`` concurrent ``openssl s_time -new`` processes on CPU 1, each opening a new
connection (no session resumption) and sending ``GET /api/items/42`` on it. Reported per run:
connections per second, and the gateway's CPU microseconds per connection (utime+stime of its
process tree over the run, divided by the connections), the steadier figure on a shared machine.

    python -m bench.mtls_handshakes [--runs 3] [--duration 5] [--clients 4]

All certificates are made here (``cryptography``) in a temporary directory removed at the end;
everything listens on 127.0.0.1 and every process started is stopped by its handle.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bench import gateway, nginx
from bench.procs import free_port, tree_cpu_seconds, wait_for_port

_CONNECTIONS = re.compile(rb"(\d+) connections in [\d.]+s")
_NOW = datetime.datetime.now(datetime.UTC)


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if found is None:
        raise RuntimeError(f"{name} not found (make test-tools installs nginx)")
    return found


def _pin(cpu: int) -> list[str]:
    return [_tool("taskset"), "-c", str(cpu)]


def _cert(directory: Path, stem: str, subject: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
          *, ca: bool = False, dns: str | None = None, ip: str | None = None,
          eku: x509.ObjectIdentifier | None = None) -> tuple[x509.Name, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(_NOW - datetime.timedelta(hours=1))
               .not_valid_after(_NOW + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    sans: list[x509.GeneralName] = [x509.DNSName(dns)] if dns else []
    if ip:
        sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = directory / f"{stem}.key"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return name, key


def _pki(directory: Path) -> None:
    ca = _cert(directory, "ca", "bench CA", None, ca=True)
    _cert(directory, "server", "127.0.0.1", ca, ip="127.0.0.1", eku=ExtendedKeyUsageOID.SERVER_AUTH)
    _cert(directory, "client", "bench-client", ca, dns="client.bench", eku=ExtendedKeyUsageOID.CLIENT_AUTH)


def _config(work: Path, port: int, upstream_port: int, *, mutual: bool) -> dict[str, Any]:
    tls: dict[str, Any] = {"cert_file": str(work / "server.pem"), "key_file": str(work / "server.key")}
    auth: Any = "none"
    if mutual:
        tls.update(client_ca_file=str(work / "ca.pem"), client_auth="required")
        auth = {"mtls": {"rules": [{"san_dns": "client.bench", "consumer": "bench"}]}}
    return {
        "version": 1, "listen": {"host": "127.0.0.1", "port": port, "tls": tls},
        "admin": {"enabled": False}, "store": {"url": f"sqlite:///{work / 'portcullis.db'}"},
        "upstreams": {"bench": {"url": f"http://127.0.0.1:{upstream_port}"}},
        "shield": {"unauthenticated_rate": None, "failed_auth_rate": None},
        "audit": {"file": str(work / "audit.jsonl"), "to_store": False, "max_file_bytes": "4GiB",
                  "spill_file": str(work / "audit.spill.jsonl")},
        "routes": [{"name": "bench", "path": gateway.ROUTE_PATH, "upstream": "bench", "auth": auth}],
    }


def _load(port: int, pki: Path, clients: int, duration: int) -> int:
    """Connections completed by ``clients`` concurrent ``openssl s_time -new`` runs."""
    argv = [*_pin(1), _tool("openssl"), "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(duration),
            "-CAfile", str(pki / "ca.pem"), "-cert", str(pki / "client.pem"), "-key", str(pki / "client.key"),
            "-www", "/api/items/42"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # noqa: S603
             for _ in range(clients)]
    total = 0
    for p in procs:
        out, _ = p.communicate(timeout=duration + 30)
        match = _CONNECTIONS.search(out)
        if match is None:
            raise RuntimeError("s_time printed no count:\n" + out.decode(errors="replace")[-2000:])
        total += int(match.group(1))
    return total


def _probe(port: int, pki: Path) -> None:
    """One request through the setup must answer 200, or the run stops (as in ``bench.run``)."""
    out = subprocess.run(  # noqa: S603
        [_tool("openssl"), "s_client", "-quiet", "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki / "ca.pem"),
         "-cert", str(pki / "client.pem"), "-key", str(pki / "client.key")],
        input=b"GET /api/items/42 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        capture_output=True, timeout=30, check=False,
    ).stdout
    if b"HTTP/1.1 200 " not in out:
        raise RuntimeError("the probe request was not answered 200:\n" + out.decode(errors="replace")[-2000:])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="portcullis-mtls-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        _pki(work)
        up_port, jwks_port = free_port(), free_port()
        paths = nginx.NginxPaths(prefix=work / "nginx", conf=work / "nginx" / "nginx.conf",
                                 pid=work / "nginx" / "nginx.pid", error_log=work / "nginx" / "error.log")
        (paths.prefix / "temp").mkdir(parents=True)
        (work / "jwks").mkdir()
        paths.conf.write_text(nginx.upstream_conf(paths, {"up": up_port}, {"up": work / "access.log"},
                                                  jwks_port, work / "jwks"))
        procs.append(subprocess.Popen(  # noqa: S603
            [*_pin(1), _tool("nginx"), "-p", str(paths.prefix), "-e", str(paths.error_log),
             "-c", str(paths.conf), "-g", "daemon off;"]))
        if not wait_for_port(up_port, 10):
            raise RuntimeError("nginx did not start")
        setups: list[tuple[str, subprocess.Popen[bytes], int]] = []
        for label in ("tls", "mtls"):
            (work / label).mkdir()
            port = free_port()
            cfg = _config(work, port, up_port, mutual=label == "mtls")
            cfg["store"] = {"url": f"sqlite:///{work / label / 'portcullis.db'}"}
            cfg_path = gateway.write_config(work / label / "portcullis.yaml", cfg)
            log = (work / label / "gateway.log").open("wb")
            gw = subprocess.Popen(  # noqa: S603
                [*_pin(0), *gateway.portcullis_argv(), "serve", str(cfg_path), "--log-level", "warning"],
                cwd=cfg_path.parent, stdout=log, stderr=subprocess.STDOUT)
            procs.append(gw)
            if not wait_for_port(port, 30, None):
                raise RuntimeError(f"{label} did not start: " + (work / label / "gateway.log").read_text()[-2000:])
            setups.append((label, gw, port))
        for _, _, port in setups:
            _probe(port, work)
            _load(port, work, args.clients, 1)  # warm-up
        figures: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in setups}
        for i in range(args.runs):
            for label, gw, port in setups:
                before = tree_cpu_seconds(gw.pid)
                count = _load(port, work, args.clients, args.duration)
                used = tree_cpu_seconds(gw.pid) - before
                rate, us = count / args.duration, used / max(count, 1) * 1e6
                figures[label].append((rate, us))
                print(f"{label} run {i}: {count} connections ({rate:.0f}/s), {us:.0f} us gateway CPU each",
                      flush=True)
                time.sleep(0.5)
        for label, values in figures.items():
            print(f"{label}: median {statistics.median(r for r, _ in values):.0f} connections/s, "
                  f"median {statistics.median(u for _, u in values):.0f} us gateway CPU per connection")
        return 0
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
