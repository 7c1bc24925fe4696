"""``log.format: json`` end to end: a log line written while a request is handled carries its request id,
and ``portcullis serve`` writes one JSON object per stderr line (uvicorn's too) beside its plain ready line."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.conftest import PEPPER, GatewayFactory, UpstreamServer, gateway_yaml

from portcullis.ingress.app import GatewayApp
from portcullis.observability.logs import JsonFormatter

ADMIN_TOKEN = "pca_" + "a1b2c3d4e5f6" + "_" + "Zq8Xk2Lm9Pv4Rt7Ws1Yb5Nc3Hd6Fg0JaZq8Xk2Lm9Pv4R"
READY = re.compile(r"^Portcullis listening on http://127\.0\.0\.1:(\d+) \(admin http://127\.0\.0\.1:(\d+)\)\n$")


@pytest.fixture
def ingress_log() -> Iterator[io.StringIO]:
    """What the ``portcullis.ingress`` logger writes, as JSON lines."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("portcullis.ingress")
    logger.addHandler(handler)
    try:
        yield out
    finally:
        logger.removeHandler(handler)


async def test_a_log_line_written_while_a_request_is_handled_carries_its_request_id(
    make_gateway: GatewayFactory, upstream: UpstreamServer, ingress_log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError(f"a bug that prints Authorization: Bearer {ADMIN_TOKEN}")

    monkeypatch.setattr(GatewayApp, "_check_request", broken)
    gw = await make_gateway(gateway_yaml(upstream.url, 'routes:\n  - {name: open, path: "/open", upstream: api, '
                                                       "auth: none}\n"))
    response = await gw.client.get("/open")
    assert response.status_code == 500
    lines = ingress_log.getvalue().splitlines()
    assert len(lines) == 1
    line = orjson.loads(lines[0])
    assert line["request_id"] == response.headers["x-request-id"]
    assert line["level"] == "error" and line["logger"] == "portcullis.ingress"
    assert line["exc_type"] == "RuntimeError" and "Traceback" in line["exc"]
    assert ADMIN_TOKEN not in lines[0] and "Bearer [REDACTED]" in line["exc"]


CONFIG = """
version: 1
listen: {{host: 127.0.0.1, port: 0, workers: {workers}}}
admin: {{host: 127.0.0.1, port: 0}}
log: {{format: json, level: warning}}
keys: {{pepper: "{pepper}"}}
store: {{url: "sqlite:///gw.db"}}
audit: {{file: audit.jsonl, flush_interval: 0.1s}}
upstreams:
  api: {{url: "{upstream}"}}
routes:
  - {{name: open, path: "/open/{{rest:path}}", upstream: api, auth: none}}
"""


@pytest.fixture(params=[1, 2], ids=["one-process", "two-workers"])
async def serving(
    tmp_path: Path, upstream: UpstreamServer, request: pytest.FixtureRequest
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``portcullis serve`` with ``log: {format: json, level: warning}`` and ``--log-level info``; with two
    workers, each spawned worker sets up its own logging from what the parent resolved."""
    config = tmp_path / "portcullis.yaml"
    text = CONFIG.format(pepper=PEPPER, upstream=upstream.url, workers=request.param)
    await asyncio.to_thread(config.write_text, text)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "portcullis", "serve", str(config), "--log-level", "info", cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _lines(stream: asyncio.StreamReader | None, into: list[str]) -> None:
    assert stream is not None
    while line := await stream.readline():
        into.append(line.decode())


async def test_serve_writes_json_lines_on_stderr_and_a_plain_ready_line_on_stdout(
    serving: asyncio.subprocess.Process,
) -> None:
    stdout: list[str] = []
    stderr: list[str] = []
    readers = [asyncio.create_task(_lines(serving.stdout, stdout)), asyncio.create_task(_lines(serving.stderr, stderr))]
    async with asyncio.timeout(30):
        while not any(READY.match(line) for line in stdout):
            assert serving.returncode is None, "".join(stderr)
            await asyncio.sleep(0.02)
    # one plain line (per worker), as tests/cluster.py and scripts parse it
    ready = next(m for m in map(READY.match, stdout) if m is not None)
    # uvicorn (the admin listener) logs a request it cannot parse; its logger reaches the root.
    reader, writer = await asyncio.open_connection("127.0.0.1", int(ready.group(2)))
    writer.write(b"NOT HTTP\r\n\r\n")
    assert (await reader.readline()).startswith(b"HTTP/1.1 400")
    # An info line: written because --log-level info wins over the config's level (warning).
    serving.send_signal(signal.SIGHUP)

    def messages() -> list[tuple[str, str]]:
        return [(line.get("logger", ""), line.get("message", "")) for line in map(_json, stderr)]

    async with asyncio.timeout(10):
        while not {("uvicorn.error", "Invalid HTTP request received."),
                   ("portcullis.reload", "config reloaded")} <= set(messages()):
            await asyncio.sleep(0.02)
    writer.close()
    await writer.wait_closed()
    serving.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        assert await serving.wait() == 0
        await asyncio.gather(*readers)
    assert stdout and all(line.startswith("Portcullis listening on http://127.0.0.1:") for line in stdout)
    for text in stderr:
        line = orjson.loads(text)  # every line the process wrote on stderr is one JSON object
        assert {"time", "level", "logger", "message"} <= line.keys(), text
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])


def _json(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
