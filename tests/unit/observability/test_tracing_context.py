"""``observability/tracing_context.py``: the W3C parser on its own (the attack table in
``tests/attacks/test_trace_context.py`` sends the same kinds of values through a real gateway)."""

from __future__ import annotations

import pytest

from portcullis.observability.tracing_context import (
    MAX_TRACESTATE_CHARS,
    TraceParent,
    parse_traceparent,
    parse_tracestate,
    read_inbound,
)

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


def test_a_version_00_traceparent_is_read_into_its_parts() -> None:
    parsed = parse_traceparent(f"00-{TRACE}-{PARENT}-01".encode())
    assert parsed == TraceParent(TRACE, PARENT, 1) and parsed.sampled


def test_a_future_version_is_read_as_far_as_version_00_goes_and_forwarded_as_00() -> None:
    # W3C Trace Context section 3.2.4: parse what version 00 defines, forward version 00.
    parsed = parse_traceparent(f"cc-{TRACE}-{PARENT}-00-future-fields".encode())
    assert parsed is not None and not parsed.sampled
    assert parsed.header() == f"00-{TRACE}-{PARENT}-00".encode()


@pytest.mark.parametrize("value", [
    pytest.param(f"ff-{TRACE}-{PARENT}-01", id="w3c-3.2.2.1-version-ff"),
    pytest.param(f"00-{'0' * 32}-{PARENT}-01", id="w3c-3.2.2.3-zero-trace-id"),
    pytest.param(f"00-{TRACE}-{'0' * 16}-01", id="w3c-3.2.2.4-zero-parent-id"),
    pytest.param(f"00-{TRACE.upper()}-{PARENT}-01", id="w3c-3.2.2-uppercase"),
    pytest.param(f"00-{TRACE}-{PARENT}-01-x", id="w3c-3.2.4-extra-field-on-00"),
    pytest.param(f"00-{TRACE}-{PARENT}-01\n", id="newline"),
])
def test_an_invalid_traceparent_is_not_read(value: str) -> None:
    assert parse_traceparent(value.encode()) is None


def test_tracestate_members_are_normalised_and_empty_ones_skipped() -> None:
    assert parse_tracestate([b" a=1 ,, b@c=2\t", b"d=x y"]) == b"a=1,b@c=2,d=x y"


def test_a_tracestate_of_exactly_512_characters_is_kept_and_one_more_is_dropped() -> None:
    at_limit = b"a=" + b"x" * 255 + b",b=" + b"y" * (MAX_TRACESTATE_CHARS - 260)
    assert len(at_limit) == MAX_TRACESTATE_CHARS and parse_tracestate([at_limit]) == at_limit
    assert parse_tracestate([at_limit + b"y"]) is None


def test_a_tracestate_alone_is_no_trace_context() -> None:
    assert read_inbound([(b"tracestate", b"a=1")]) is None


def test_an_invalid_tracestate_leaves_its_traceparent_standing() -> None:
    inbound = read_inbound([(b"traceparent", f"00-{TRACE}-{PARENT}-01".encode()), (b"tracestate", b"A=1")])
    assert inbound is not None and inbound.tracestate is None
    assert inbound.headers() == [(b"traceparent", f"00-{TRACE}-{PARENT}-01".encode())]
