"""The hostile driver's command line, its bounds, its reading of a cut connection, and its summary."""

from __future__ import annotations

import argparse
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from bench import hostile
from bench.hostile import DriverOptions, parse_args, parse_attack, summarize


def test_an_attack_is_a_known_kind_and_a_count() -> None:
    assert parse_attack("slowloris=200") == ("slowloris", 200)


@pytest.mark.parametrize("text", ["slowloris", "teardrop=5", "idle=lots", "idle=0", f"idle={hostile.MAX_SLOTS + 1}"],
                         ids=["no-count", "unknown-kind", "not-a-number", "zero", "over-the-cap"])
def test_an_attack_outside_the_bounds_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_attack(text)


def test_the_options_a_parent_builds_parse_back_to_themselves(tmp_path: Path) -> None:
    opts = DriverOptions(port=8080, attacks=(("slowloris", 200), ("non_reader", 50)), sources=16, ramp_s=2.0,
                         duration_s=70.0, stats=tmp_path / "stats.json")
    assert parse_args(opts.argv()) == opts


@pytest.mark.parametrize("extra", [
    ["--attack", "idle=3000", "--attack", "idle=3000"],  # more than MAX_SLOTS in all
    ["--attack", "idle=1", "--duration", "601"],  # longer than MAX_DURATION_S
    ["--attack", "idle=1", "--sources", "0"],
    ["--attack", "idle=1", "--ramp", "70", "--duration", "60"],  # the ramp must end before the run
], ids=["too-many-slots", "too-long", "no-source-address", "ramp-past-the-end"])
def test_a_driver_run_is_bounded_in_count_and_time(extra: list[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--port", "8080", "--stats", str(tmp_path / "s.json"), *extra])


def test_every_attack_opens_towards_the_gateways_routes_and_only_the_endless_ones_leave_the_head_open() -> None:
    for kind in hostile.ATTACKS.values():
        opening = kind.opening("pcl_key")
        if kind.name == "idle":
            assert opening == b""
            continue
        assert opening.split(b" ")[1].startswith(b"/api/")
        complete = opening.endswith(b"\r\n\r\n")
        assert complete == (kind.name in ("non_reader", "slow_body")), kind.name


def _loopback_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    return client, accepted


def _wait_until_not_established(sock: socket.socket) -> None:
    deadline = time.monotonic() + 2.0
    while hostile._established(sock) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_connection_the_gateway_answered_and_closed_is_read_as_that_answer() -> None:
    client, accepted = _loopback_pair()
    with client:
        assert hostile._established(client)
        accepted.sendall(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")
        accepted.close()
        _wait_until_not_established(client)
        assert not hostile._established(client)
        assert hostile._ended(client) == "answered_408"


def test_a_connection_cut_in_the_middle_of_its_answer_is_read_as_a_cut() -> None:
    client, accepted = _loopback_pair()
    with client:
        accepted.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 8388608\r\n\r\nLLLL")
        accepted.close()
        _wait_until_not_established(client)
        assert hostile._ended(client) == "cut_mid_response"


def test_a_connection_closed_without_a_word_is_read_as_such() -> None:
    client, accepted = _loopback_pair()
    with client:
        accepted.close()
        _wait_until_not_established(client)
        assert hostile._ended(client) == "closed_without_answer"


def _stats(samples: list[tuple[float, dict[str, int]]], ready: float | None) -> dict[str, Any]:
    return {"attacks": {"slowloris": 200, "non_reader": 50}, "sources": 16, "ready_after_s": ready,
            "opened": {"slowloris": 400, "non_reader": 50},
            "outcomes": {"slowloris": {"answered_408": 150, "reset": 1}, "non_reader": {"reset": 2}},
            "samples": samples, "driver_cpu_share": 0.05}


def test_the_summary_counts_attached_connections_only_after_the_ramp_and_sums_outcomes_over_kinds() -> None:
    samples = [(0.5, {"slowloris": 40}), (3.0, {"slowloris": 200, "non_reader": 50}),
               (3.5, {"slowloris": 150, "non_reader": 50})]
    s = summarize(_stats(samples, ready=3.0))
    assert (s["target"], s["attached_mean"], s["attached_min"], s["opened"]) == (250, 225.0, 200, 450)
    assert s["ended_by_gateway"] == {"answered_408": 150, "reset": 3}


def test_a_driver_that_never_got_ready_has_no_attached_figures() -> None:
    s = summarize(_stats([(0.5, {"slowloris": 40})], ready=None))
    assert (s["attached_mean"], s["attached_min"]) == (None, None)
