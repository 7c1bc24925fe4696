"""The deadline table: which timeout applies in which state, and when it runs out (pure, loop time)."""

from __future__ import annotations

import pytest

from portcullis.server.deadlines import (
    BODY,
    FIRST_BYTE,
    HEAD,
    IN_FLIGHT,
    KEEPALIVE,
    LINGER,
    PARSE_BODY,
    PARSE_HEAD,
    PARSE_IDLE,
    WRITE,
    expires_at,
    waiting_for,
)
from portcullis.server.limits import ServerLimits

LIMITS = ServerLimits(first_byte_timeout=1.0, head_timeout=2.0, body_timeout=3.0, body_min_rate=100,
                      keepalive_timeout=4.0, write_timeout=5.0)

STATES = [
    # closing, writing_paused, busy, parsing, served, wait
    pytest.param(False, False, False, PARSE_IDLE, False, FIRST_BYTE, id="new-connection-waits-for-its-first-byte"),
    pytest.param(False, False, False, PARSE_IDLE, True, KEEPALIVE, id="served-connection-idles-in-keep-alive"),
    pytest.param(False, False, False, PARSE_HEAD, True, HEAD, id="slowloris-inside-a-head"),
    pytest.param(False, False, False, PARSE_BODY, False, BODY, id="slow-upload-inside-a-body"),
    pytest.param(False, False, True, PARSE_IDLE, True, IN_FLIGHT, id="request-with-the-app"),
    pytest.param(False, False, True, PARSE_HEAD, True, IN_FLIGHT, id="pipelined-head-waits-behind-the-app"),
    pytest.param(False, True, True, PARSE_IDLE, True, WRITE, id="paused-write-outranks-the-request-in-flight"),
    pytest.param(True, True, True, PARSE_BODY, True, LINGER, id="closing-outranks-everything"),
]


@pytest.mark.parametrize(("closing", "paused", "busy", "parsing", "served", "wait"), STATES)
def test_each_state_has_exactly_one_wait(
    closing: bool, paused: bool, busy: bool, parsing: int, served: bool, wait: int
) -> None:
    assert waiting_for(closing, paused, busy, parsing, served) == wait


EXPIRIES = [
    # wait, expected deadline with since=10, write_paused_at=20, body_since=30, body_size=250
    pytest.param(FIRST_BYTE, 11.0, id="first-byte-from-the-connection"),
    pytest.param(HEAD, 12.0, id="head-from-the-request's-first-byte"),
    pytest.param(BODY, 30.0 + 3.0 + 2.5, id="body-earns-a-second-per-body_min_rate-bytes"),
    pytest.param(KEEPALIVE, 14.0, id="keep-alive-from-the-last-response"),
    pytest.param(WRITE, 25.0, id="write-from-the-pause"),
    pytest.param(LINGER, 12.0, id="linger-at-most-two-seconds"),
    pytest.param(IN_FLIGHT, None, id="none-while-the-app-has-the-request"),
]


@pytest.mark.parametrize(("wait", "deadline"), EXPIRIES)
def test_each_wait_runs_out_at_its_own_deadline(wait: int, deadline: float | None) -> None:
    assert expires_at(wait, LIMITS, 10.0, 20.0, 30.0, 250) == deadline


def test_lingering_is_never_longer_than_the_write_timeout() -> None:
    assert expires_at(LINGER, ServerLimits(write_timeout=0.5), 10.0, 0.0, 0.0, 0) == 10.5
