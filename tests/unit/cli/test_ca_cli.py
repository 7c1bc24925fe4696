"""``portcullis ca init``: the files it writes, and what it refuses."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509
from typer.testing import CliRunner

from portcullis.cli.main import app

runner = CliRunner()


def test_ca_init_writes_a_private_key_and_a_ca_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "ca.pem", tmp_path / "ca.key"
    result = runner.invoke(app, ["ca", "init", "--cert", str(cert), "--key", str(key), "--days", "30",
                                 "--permit", "api.openai.com"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    assert loaded.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert "SHA-256:" in result.output and "PRIVATE KEY" not in result.output


def test_ca_init_refuses_to_replace_a_key_without_force(tmp_path: Path) -> None:
    args = ["ca", "init", "--cert", str(tmp_path / "ca.pem"), "--key", str(tmp_path / "ca.key")]
    assert runner.invoke(app, args).exit_code == 0
    before = (tmp_path / "ca.key").read_bytes()
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "--force" in refused.output
    assert (tmp_path / "ca.key").read_bytes() == before
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0
    assert (tmp_path / "ca.key").read_bytes() != before


def test_ca_init_refuses_a_bad_permitted_name(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ca", "init", "--cert", str(tmp_path / "c"), "--key", str(tmp_path / "k"),
                                 "--permit", "bad name"])
    assert result.exit_code == 2
    assert not (tmp_path / "k").exists()


def test_serve_refuses_to_start_with_a_ca_it_cannot_use(tmp_path: Path) -> None:
    key = tmp_path / "ca.key"
    assert runner.invoke(app, ["ca", "init", "--cert", str(tmp_path / "ca.pem"), "--key", str(key)]).exit_code == 0
    key.chmod(0o644)  # readable by others: refused
    config = tmp_path / "gw.yaml"
    config.write_text(f"""
version: 1
store: {{url: "sqlite:///{tmp_path}/gw.db"}}
keys: {{pepper: "{'p' * 40}"}}
upstreams: {{api: {{url: "http://127.0.0.1:9"}}}}
routes: [{{name: health, path: /health, upstream: api, auth: none}}]
egress:
  routes: [{{name: llm, url: "https://llm.example", intercept: true}}]
  proxy: {{listen: "127.0.0.1:0", ca: {{cert_file: "{tmp_path}/ca.pem", key_file: "{key}"}}}}
""")
    result = runner.invoke(app, ["serve", str(config)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "egress.proxy.ca: ca key readable by others" in result.output
