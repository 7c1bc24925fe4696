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
