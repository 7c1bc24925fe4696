"""`portcullis --version` names the version the package was built from (one source: ``portcullis.__version__``)."""

from __future__ import annotations

from importlib.metadata import version

from typer.testing import CliRunner

import portcullis
from portcullis.cli.main import app


def test_version_flag_prints_the_installed_distributions_version() -> None:
    result = CliRunner().invoke(app, ["--version"])

    assert result.exit_code == 0
    assert result.output == f"portcullis {portcullis.__version__}\n"
    assert version("portcullis-gateway") == portcullis.__version__
