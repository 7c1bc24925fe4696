"""The package's public surface is deliberate: adding to it is a decision, so it is pinned here."""

from __future__ import annotations

import portcullis


def test_public_api_is_pinned() -> None:
    assert sorted(portcullis.__all__) == ["ConfigError", "ErrorCode", "PortcullisError", "__version__"]


def test_every_error_code_has_a_public_message() -> None:
    from portcullis.errors import PUBLIC_ERRORS, ErrorCode

    assert set(PUBLIC_ERRORS) == set(ErrorCode)
    for status, title in PUBLIC_ERRORS.values():
        assert 400 <= status < 600
        assert title.endswith(".") and len(title) < 40
