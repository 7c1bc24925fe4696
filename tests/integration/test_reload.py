"""Reloads as an operator meets them: traffic keeps flowing, bad files change nothing, floods are refused.

A real gateway and a real admin listener on 127.0.0.1. A reload that must stay "running" for as long
as a test needs reads its config from a FIFO: the reload's worker thread blocks opening it until the
test writes the file, which makes "while a reload runs" exact without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import Gateway, GatewayFactory, UpstreamServer, gateway_yaml
from tests.unit.config.test_safe_yaml import BILLION_LAUGHS

from portcullis.gateway.reload import Reloader
from portcullis.testing import ManualClock


def routes_yaml(*extra: str) -> str:
    return "routes:\n  - {name: open, path: \"/open/{rest:path}\", upstream: api, auth: none}\n" + "".join(extra)


def many_routes(count: int) -> str:
    return "".join(
        f"  - {{name: r{i}, path: \"/s{i}/items/{{item_id}}\", upstream: api, auth: none, methods: [GET]}}\n"
        for i in range(count)
    )


class Admin:
    """The admin listener on a loopback socket, in front of a ``Reloader`` for ``config``."""

    def __init__(self, base: str, client: httpx.AsyncClient, reloader: Reloader) -> None:
        self.base = base
        self.client = client
        self.reloader = reloader

    async def reload(self) -> httpx.Response:
        return await self.client.post(self.base + "/reload")


@contextlib.asynccontextmanager
async def admin_for(app_reloader: Reloader, gw: Gateway) -> AsyncIterator[Admin]:
    token = await gw.admin_token("admin")
    async with gw.admin_listener(reloader=app_reloader) as base, httpx.AsyncClient(
        timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        yield Admin(base, client, app_reloader)


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A config "file" whose reader blocks until the test writes it; released at teardown."""
    path = tmp_path / "fifo.yaml"
    os.mkfifo(path)
    yield path
    with contextlib.suppress(OSError):  # a reader still waiting gets an empty file and ends
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


async def write_fifo(path: Path, text: str) -> None:
    """Write ``text`` to the FIFO once its reader (the reload's worker thread) has opened it."""
    def write() -> None:
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:  # ENXIO: no reader yet; the reload is about to open it
                if exc.errno != errno.ENXIO:
                    raise
                os.sched_yield()
        os.set_blocking(fd, True)
        with os.fdopen(fd, "w") as file:
            file.write(text)

    await asyncio.to_thread(write)


def assert_problem(response: httpx.Response, status: int, code: str, detail: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body == {"type": f"https://portcullis.dev/errors/{code}", "title": body["title"], "status": status,
                    "code": code, "detail": detail, "request_id": body["request_id"]}


# --- traffic during a large reload -------------------------------------------------------------

@pytest.mark.timeout(600)  # a 20,000-route reload on a busy shared CI machine; nothing asserts its time
async def test_a_20000_route_config_reloads_while_requests_keep_being_answered(
    make_gateway: GatewayFactory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, routes_yaml()))
    config = tmp_path / "big.yaml"
    await asyncio.to_thread(config.write_text, gateway_yaml(upstream.url, routes_yaml(many_routes(20_000))))
    reloader = Reloader(gw.app, config, grace_s=1)
    answered_during_reload = timed_out = 0
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        reload = asyncio.create_task(reloader.reload())
        while not reload.done():
            try:
                response = await client.get("/open/during")
            except httpx.TimeoutException:
                timed_out += 1
                continue
            if response.status_code == 200 and not reload.done():
                answered_during_reload += 1
        result = await reload
        assert (await client.get("/s19999/items/7")).status_code == 200
        assert (await client.get("/open/after")).status_code == 200
    await reloader.aclose()
    assert result.ok, result
    assert answered_during_reload > 0
    assert timed_out == 0


# --- files refused: the error line, and the old config keeps serving ----------------------------

REFUSED = [
    # The classic "billion laughs" YAML variant (CVE-2019-11253, Kubernetes), after a valid head.
    pytest.param(lambda url: (gateway_yaml(url, routes_yaml()) + BILLION_LAUGHS).encode(),
                 "{path}, line 13, column 8: refused: YAML aliases (*name, <<: *name) are not accepted in a config; "
                 "write the value out", id="CVE-2019-11253-billion-laughs"),
    pytest.param(lambda url: b"# " + b"x" * (16 * 1024 * 1024) + b"\n",
                 "{path}: refused: larger than 16 MiB", id="document-over-16-MiB"),
    pytest.param(lambda url: (gateway_yaml(url, routes_yaml()) + "note: '" + "x" * 70_000 + "'\n").encode(),
                 "{path}, line 12, column 7: refused: a value longer than 64 KiB", id="string-over-64-KiB"),
    pytest.param(lambda url: gateway_yaml(url, routes_yaml()).encode() + b"# caf\xe9\n",
                 "{path}, line 12: not UTF-8 text (byte 0xe9 at byte offset {offset})", id="not-utf-8"),
]


@pytest.mark.parametrize(("content", "error"), REFUSED)
async def test_a_refused_file_is_one_error_line_and_the_old_config_keeps_serving(
    make_gateway: GatewayFactory, upstream: UpstreamServer, tmp_path: Path, content: object, error: str
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, routes_yaml()))
    config = tmp_path / "next.yaml"
    assert callable(content)
    data: bytes = content(upstream.url)
    await asyncio.to_thread(config.write_bytes, data)
    async with admin_for(Reloader(gw.app, config, grace_s=1), gw) as admin:
        response = await admin.reload()
    # The offset depends on the length of the upstream's URL (its port).
    assert_problem(response, 422, "admin.config_rejected", error.format(path=config, offset=data.find(b"\xe9")))
    assert (await gw.client.get("/open/still")).status_code == 200


async def test_a_legitimate_config_with_anchors_and_inline_merge_keys_reloads(
    make_gateway: GatewayFactory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, routes_yaml()))
    config = tmp_path / "next.yaml"
    await asyncio.to_thread(config.write_text, gateway_yaml(upstream.url, routes_yaml(
        "  - &added {name: added, path: /added, upstream: api, auth: none}\n"
        "  - {<<: {upstream: api, auth: none}, name: merged, path: /merged}\n")))
    async with admin_for(Reloader(gw.app, config, grace_s=1), gw) as admin:
        response = await admin.reload()
    assert response.status_code == 200
    assert response.json() == {"status": "reloaded", "restart_needed": [], "broadcast": False}
    assert (await gw.client.get("/added")).status_code == 200
    assert (await gw.client.get("/merged")).status_code == 200


async def test_a_reload_that_outlasts_its_time_limit_is_refused_and_the_old_config_keeps_serving(
    make_gateway: GatewayFactory, upstream: UpstreamServer, fifo: Path
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, "reload: {timeout: 50ms}\n" + routes_yaml()))
    async with admin_for(Reloader(gw.app, fifo, grace_s=1), gw) as admin:
        response = await admin.reload()  # its worker waits on the FIFO, which nobody writes yet
        assert_problem(response, 422, "admin.config_rejected",
                       f"{fifo}: reading, checking and compiling the config took longer than 0.05s")
        assert (await gw.client.get("/open/still")).status_code == 200
        # The abandoned worker has not ended, so no second reload starts beside it.
        assert_problem(await admin.reload(), 429, "admin.reload_busy", "A reload is running.")
        await write_fifo(fifo, gateway_yaml(upstream.url, routes_yaml()))  # lets the worker end


# --- floods -------------------------------------------------------------------------------------

async def test_a_reload_asked_for_while_one_runs_gets_429_with_retry_after(
    make_gateway: GatewayFactory, upstream: UpstreamServer, fifo: Path
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, routes_yaml()))
    reloader = Reloader(gw.app, fifo, grace_s=0)
    async with admin_for(reloader, gw) as admin:
        first = await start_reload(reloader)  # its worker now waits on the FIFO
        second = await admin.reload()
        assert second.headers["retry-after"] == "1"
        assert_problem(second, 429, "admin.reload_busy", "A reload is running.")
        await write_fifo(fifo, gateway_yaml(upstream.url, routes_yaml(ADDED)))
        assert (await first).ok
    assert (await gw.client.get("/added")).status_code == 200


ADDED = "  - {name: added, path: /added, upstream: api, auth: none}\n"


async def start_reload(reloader: Reloader) -> asyncio.Task[object]:
    """Start a reload as the admin API does, and return once it is running."""
    task: asyncio.Task[object] = asyncio.create_task(reloader.reload())
    await asyncio.sleep(0)  # one turn of the loop: the task's first step starts the reload
    return task


async def test_reloads_start_at_most_once_per_min_interval(
    make_gateway: GatewayFactory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    clock = ManualClock()
    gw = await make_gateway(gateway_yaml(upstream.url, "reload: {min_interval: 5s}\n" + routes_yaml()), clock=clock)
    config = tmp_path / "next.yaml"
    await asyncio.to_thread(config.write_text, gateway_yaml(upstream.url, "reload: {min_interval: 5s}\n" + routes_yaml()))
    async with admin_for(Reloader(gw.app, config, grace_s=0), gw) as admin:
        assert (await admin.reload()).status_code == 200
        clock.advance(2)
        flood = [await admin.reload() for _ in range(20)]
        assert {r.status_code for r in flood} == {429}
        assert {r.headers["retry-after"] for r in flood} == {"3"}
        assert_problem(flood[0], 429, "admin.reload_busy", "The last reload started less than 5s ago.")
        clock.advance(3)
        assert (await admin.reload()).status_code == 200
    metrics = gw.runtime.metrics.render().decode()
    assert 'portcullis_config_reloads_total{result="applied"} 2.0' in metrics


async def test_signals_during_a_running_reload_coalesce_into_one_more_reload(
    make_gateway: GatewayFactory, upstream: UpstreamServer, fifo: Path
) -> None:
    clock = ManualClock()
    gw = await make_gateway(gateway_yaml(upstream.url, routes_yaml()), clock=clock)
    reloader = Reloader(gw.app, fifo, grace_s=0)
    async with admin_for(reloader, gw) as admin:
        first = await start_reload(reloader)
        for _ in range(10):  # what SIGHUP and other instances' reload events call
            reloader.request()
        await write_fifo(fifo, gateway_yaml(upstream.url, routes_yaml(ADDED)))
        assert (await first).ok
        # One more reload reads the file afresh: it waits on the FIFO for the newer content.
        await write_fifo(fifo, gateway_yaml(upstream.url, routes_yaml(
            ADDED, "  - {name: later, path: /later, upstream: api, auth: none}\n")))
        while (await gw.client.get("/later")).status_code != 200:
            pass  # each GET is a round trip: the queued reload's swap happens meanwhile
        # And only one: a reload asked for now is not refused as "running".
        clock.advance(1)
        third = asyncio.create_task(admin.reload())
        await write_fifo(fifo, gateway_yaml(upstream.url, routes_yaml(ADDED)))
        assert (await third).status_code == 200
    metrics = gw.runtime.metrics.render().decode()
    assert 'portcullis_config_reloads_total{result="applied"} 3.0' in metrics
