"""Log lines: the JSON shape, the request id from the context, exceptions on one line, secrets masked.

Secrets are made up but shaped as the gateway's own (``identity.api_keys``, ``identity.admin_tokens``)
and built from parts so this file does not itself look like a leaked secret to a scanner.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import orjson
import pytest

from portcullis.observability.logs import REQUEST_ID, JsonFormatter, TextFormatter, configure_logging

API_KEY = "pcl_" + "k1a2b3c4" + "_" + "Zq8Xk2Lm9Pv4Rt7Ws1Yb5Nc3Hd6Fg0JaZq8Xk2Lm9Pv"
ADMIN_TOKEN = "pca_" + "a1b2c3d4e5f6" + "_" + "Zq8Xk2Lm9Pv4Rt7Ws1Yb5Nc3Hd6Fg0JaZq8Xk2Lm9Pv4R"
JWT = "eyJ" + "hbGciOiJSUzI1NiJ9" + "." + "eyJzdWIiOiJhbGljZSJ9" + "." + "c2lnbmF0dXJlLW1hZGUtdXA"
BEARER_SECRET = "opaque" + "Credential" + "42xyz"
SECRETS = [API_KEY, ADMIN_TOKEN, JWT, BEARER_SECRET]
MESSAGE = f"caller sent key {API_KEY}, admin {ADMIN_TOKEN}, jwt {JWT}, Authorization: Bearer {BEARER_SECRET}"


def _record(msg: str, *args: object, exc: BaseException | None = None, name: str = "portcullis.ingress",
            level: int = logging.WARNING) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


def _raised(message: str) -> ValueError:
    try:
        raise ValueError(message)
    except ValueError as exc:
        return exc


def test_a_json_line_parses_and_has_the_fields() -> None:
    record = _record("upstream %s answered %d", "api", 502)
    record.created, record.msecs = 1_796_601_600.25, 250.0  # 2026-12-07T00:00:00.250Z
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert orjson.loads(line) == {
        "time": "2026-12-07T00:00:00.250Z", "level": "warning", "logger": "portcullis.ingress",
        "message": "upstream api answered 502",
    }


def test_a_json_line_carries_the_request_id_of_the_context() -> None:
    token = REQUEST_ID.set("5607377059180f3e9a1b2c3d4e5f6a7b")
    try:
        line = orjson.loads(JsonFormatter().format(_record("inside a request")))
    finally:
        REQUEST_ID.reset(token)
    assert line["request_id"] == "5607377059180f3e9a1b2c3d4e5f6a7b"
    assert "request_id" not in orjson.loads(JsonFormatter().format(_record("outside a request")))


def test_an_exception_is_one_line_with_its_traceback_in_a_field() -> None:
    line = JsonFormatter().format(_record("internal error", exc=_raised("boom")))
    assert "\n" not in line
    fields = orjson.loads(line)
    assert fields["message"] == "internal error"
    assert fields["exc_type"] == "ValueError"
    assert fields["exc"].startswith("Traceback (most recent call last):\n")
    assert fields["exc"].endswith("ValueError: boom")
    assert "_raised" in fields["exc"]


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
def test_secrets_in_a_message_are_masked(formatter: logging.Formatter) -> None:
    line = formatter.format(_record("%s", MESSAGE))
    for secret in SECRETS:
        assert secret not in line
    assert "pcl_k1a2b3c4_[REDACTED]" in line  # the key id stays, for correlation
    assert "pca_a1b2c3d4e5f6_[REDACTED]" in line
    assert "[JWT]" in line and "Bearer [REDACTED]" in line


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
def test_secrets_in_an_exception_are_masked(formatter: logging.Formatter) -> None:
    line = formatter.format(_record("request failed", exc=_raised(MESSAGE)))
    assert "ValueError" in line
    for secret in SECRETS:
        assert secret not in line


def test_the_text_line_keeps_its_former_shape() -> None:
    line = TextFormatter().format(_record("upstream %s answered %d", "api", 502))
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING portcullis\.ingress upstream api answered 502",
                        line)


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger's handlers and level, put back after the test (pytest's capture lives there)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(("fmt", "formatter"), [("json", JsonFormatter), ("text", TextFormatter)])
def test_configure_logging_leaves_one_handler_on_the_root(
    root_logger: logging.Logger, fmt: str, formatter: type[logging.Formatter], monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    configure_logging("json" if fmt == "json" else "text", logging.WARNING)
    assert len(root_logger.handlers) == 1 and isinstance(root_logger.handlers[0].formatter, formatter)
    assert root_logger.level == logging.WARNING
    logging.getLogger("a.library").warning("seen with %s", API_KEY)  # any logger reaches the root
    logging.getLogger("portcullis.test").info("below the level")
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 1 and API_KEY not in lines[0] and "seen with pcl_k1a2b3c4_[REDACTED]" in lines[0]
    if fmt == "json":
        assert orjson.loads(lines[0])["logger"] == "a.library"
