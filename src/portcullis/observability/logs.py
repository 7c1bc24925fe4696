"""The gateway process's log lines: plain text for a terminal or one JSON object per line, secrets masked.

Why: ``log.format: json`` lets a log shipper read every line the process writes (our
``portcullis.*`` loggers and uvicorn's and asyncio's, which reach the root logger) without a
parser per message shape: ``time`` (ISO 8601 UTC, milliseconds), ``level``, ``logger``,
``message``, ``request_id`` while a request is handled, and ``exc_type`` / ``exc`` (the formatted
traceback, one string) for an exception, so a traceback is one line too.

Why no library (python-json-logger and others exist): the formatter is some forty lines over the
standard library ``logging`` and orjson (already a dependency), and the part that matters here,
masking, is ours either way. A dependency would add a release cadence to follow for less code
than its configuration would take.

Masking: every message and exception text goes through ``audit.redact.redact_text``, in both
formats, so a key (``pcl_…``), an admin token (``pca_…``), a JWT, a scheme credential or a
provider key that some code logs is masked before the line leaves the process. ``redact_text``
asks a cheap prefilter first, so a line with nothing to mask costs one regex search.

The request id: ``ingress.app`` sets ``REQUEST_ID`` (a ``ContextVar``) when a request starts and
resets it when the request is recorded; a log call in between, in any layer, carries it. Setting a
context variable costs well under a microsecond, so the data path pays nothing it would notice.
A task started while a request is handled copies the context, so a single-flight fetch (a JWKS
refresh, an API key lookup) logs with the id of the request that started it; the audit writer's
tasks start at gateway start and carry none.

What it refuses to do: serialise ``extra=`` fields of a log call (they would bypass masking and
make the line's shape depend on the caller), or touch the ready line ``Portcullis listening on …``,
which ``cli.serving`` prints to stdout as a plain line for scripts and tests to parse.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import Literal

import orjson

from portcullis.audit.redact import redact_text

__all__ = ["LEVELS", "REQUEST_ID", "JsonFormatter", "LogFormat", "TextFormatter", "configure_logging"]

LogFormat = Literal["text", "json"]
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

# The id of the request being handled in this context, or None outside a request.
REQUEST_ID: ContextVar[str | None] = ContextVar("portcullis_request_id", default=None)

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class TextFormatter(logging.Formatter):
    """The former text line (``time level logger message`` and a traceback below), masked."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        # The whole line, traceback included: the fields around the message are ours and hold no
        # shape redact_text masks (a timestamp has too few digits for a card number).
        return redact_text(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, str] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            line["request_id"] = request_id
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = record.exc_info[0].__name__
            line["exc"] = redact_text(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exc"] = redact_text(record.exc_text)
        if record.stack_info:
            line["stack"] = redact_text(self.formatStack(record.stack_info))
        return orjson.dumps(line).decode()


def configure_logging(fmt: LogFormat, level: int) -> None:
    """The process's root logger: one stderr handler in ``fmt`` at ``level``, replacing any other."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
