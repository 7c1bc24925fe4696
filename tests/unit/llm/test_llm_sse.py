"""The SSE parser follows the WHATWG rules whatever the chunking, and stays within its bound."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portcullis.llm.sse import SseEvent, SseEventTooLarge, SseParser


def parse(stream: bytes, *, max_event_chars: int = 1 << 20) -> list[SseEvent]:
    return SseParser(max_event_chars=max_event_chars).feed(stream)


@pytest.mark.parametrize(("stream", "events"), [
    # WHATWG HTML 9.2.6 examples and rules
    (b"data: hello\n\n", [SseEvent("hello")]),
    (b"data: YHOO\ndata: +2\ndata: 10\n\n", [SseEvent("YHOO\n+2\n10")]),  # multi-line data joined by LF
    (b": a comment\ndata: x\n\n", [SseEvent("x")]),
    (b"data:no space\n\n", [SseEvent("no space")]),
    (b"data:  two spaces\n\n", [SseEvent(" two spaces")]),  # only one leading space is dropped
    (b"data\n\n", [SseEvent("")]),  # a field with no colon has an empty value
    (b"event: message_start\ndata: {}\n\n", [SseEvent("{}", "message_start")]),
    (b"id: 7\ndata: a\n\ndata: b\n\n", [SseEvent("a", id="7"), SseEvent("b", id="7")]),  # the last id persists
    (b"id: a\0b\ndata: x\n\n", [SseEvent("x")]),  # an id with NUL is ignored
    (b"retry: 10\nfoo: bar\ndata: x\n\n", [SseEvent("x")]),  # retry and unknown fields are ignored
    (b"event: ping\n\n", []),  # no data: nothing dispatched, and the event name is reset
    (b"data: a\r\n\r\ndata: b\r\rdata: c\n\n", [SseEvent("a"), SseEvent("b"), SseEvent("c")]),  # CRLF, CR, LF
    (b"\xef\xbb\xbfdata: bom\n\n", [SseEvent("bom")]),  # a leading BOM is dropped
    (b"data: unfinished", []),  # no blank line: never dispatched
    (b"data: \xff\n\n", [SseEvent("\ufffd")]),  # invalid UTF-8 is replaced
], ids=["simple", "multi-line", "comment", "no-space", "two-spaces", "bare-field", "event-name", "id-persists",
        "id-nul", "ignored-fields", "no-data", "line-ends", "bom", "unfinished", "bad-utf8"])
def test_streams_parse_as_the_standard_says(stream: bytes, events: list[SseEvent]) -> None:
    assert parse(stream) == events


STREAM = (b"\xef\xbb\xbfevent: message_start\r\ndata: {\"a\": \"\xc3\xa9t\xc3\xa9\"}\r\n\r\n: ping\r"
          b"data: line one\ndata: line two\n\nid: 3\rdata: [DONE]\r\r")


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    parser = SseParser()
    events = [e for a, b in pairwise(bounds) for e in parser.feed(STREAM[a:b])]
    assert events == parse(STREAM)
    assert [e.event for e in events] == ["message_start", "message", "message"]


def test_a_cr_and_lf_split_across_chunks_end_one_line() -> None:
    parser = SseParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\ndata: b\n\n") == [SseEvent("a\nb")]  # not two line ends (a blank line)


@pytest.mark.parametrize("stream", [
    b"data: " + b"x" * 200,  # a line that never ends
    b"data: x\n" * 50,  # an event that never ends
], ids=["endless-line", "endless-event"])
def test_a_stream_that_never_ends_an_event_is_refused_at_the_bound(stream: bytes) -> None:
    parser = SseParser(max_event_chars=100)

    def feed_all() -> None:
        for i in range(0, len(stream), 7):
            parser.feed(stream[i:i + 7])

    with pytest.raises(SseEventTooLarge):
        feed_all()


def test_many_small_events_stay_within_the_bound() -> None:
    parser = SseParser(max_event_chars=100)
    events = [e for _ in range(1000) for e in parser.feed(b"data: " + b"y" * 80 + b"\n\n")]
    assert len(events) == 1000
