"""An incremental, bounded parser of server-sent events (the ``text/event-stream`` format).

Why hand-written: the gateway sees an LLM answer as chunks of bytes that it forwards as they come
and must read usage from on the way. A parser that wants the whole body, or one line per call,
does not fit; libraries that parse SSE own the HTTP client too. This one takes bytes as they
arrive and returns the events each chunk completes.

It follows the WHATWG HTML "Server-sent events" parsing rules (section 9.2.6): UTF-8 with an
optional leading BOM, lines ended by CRLF, LF or CR (a CR at the end of one chunk and an LF at the
start of the next are one line end), ``:`` comments ignored, ``field: value`` with one leading
space dropped, several ``data:`` lines joined by LF, an event dispatched on an empty line (and
only if it has data), ``id`` containing NUL ignored, ``retry`` ignored (the gateway never
reconnects). An unfinished event at the end of the stream is dropped, as the standard says.

What it refuses: to grow without bound. A hostile or broken stream that never ends a line or an
event would otherwise hold it all in memory; once the pending line plus the event's data passes
``max_event_chars`` the parser raises ``SseEventTooLarge`` and must not be fed again. Invalid
UTF-8 is replaced (U+FFFD), as the standard's decoder does.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_EVENT_CHARS", "SseEvent", "SseEventTooLarge", "SseParser"]

DEFAULT_MAX_EVENT_CHARS = 1 << 20  # an LLM stream's events are small; a final usage chunk is well under 1 MiB

_EOL = re.compile(r"\r\n|\r|\n")


class SseEventTooLarge(Exception):
    """A line or an event passed the parser's bound; the parser is finished."""


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event: ``event`` is ``"message"`` unless the stream named it."""

    data: str
    event: str = "message"
    id: str | None = None


class SseParser:
    """Feed it chunks; it returns the events each chunk completes."""

    __slots__ = ("_data", "_data_chars", "_decoder", "_event", "_id", "_last_id", "_max", "_pending",
                 "_skip_lf", "_started")

    def __init__(self, *, max_event_chars: int = DEFAULT_MAX_EVENT_CHARS) -> None:
        if max_event_chars < 1:
            raise ValueError("max_event_chars must be positive")
        self._max = max_event_chars
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""  # the current line, not yet ended
        self._skip_lf = False  # the last chunk ended in CR: an LF first in the next one ends nothing
        self._started = False  # the BOM check is done
        self._data: list[str] = []
        self._data_chars = 0
        self._event = ""
        self._id: str | None = None
        self._last_id: str | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """The events completed by ``chunk``. Raises ``SseEventTooLarge`` past the bound."""
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._skip_lf:
            self._skip_lf = False
            if text[:1] == "\n":
                text = text[1:]
        events: list[SseEvent] = []
        pos = 0
        for match in _EOL.finditer(text):
            line = text[pos:match.start()]
            if self._pending:
                line = self._pending + line
                self._pending = ""
            self._check(len(line))
            self._line(line, events)
            pos = match.end()
        if pos and text[pos - 1] == "\r" and pos == len(text):
            self._skip_lf = True
        rest = text[pos:]
        if rest:
            self._check(len(self._pending) + len(rest))
            self._pending += rest
        return events

    def _check(self, line_chars: int) -> None:
        if line_chars + self._data_chars > self._max:
            raise SseEventTooLarge(f"an event passed {self._max} characters")

    def _line(self, line: str, events: list[SseEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line[0] == ":":
            return
        field, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
            self._data_chars += len(value) + 1
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._id = value
        # "retry" and unknown fields are ignored (WHATWG 9.2.6)

    def _dispatch(self, events: list[SseEvent]) -> None:
        if self._id is not None:
            self._last_id = self._id
        if self._data:
            events.append(SseEvent("\n".join(self._data), self._event or "message", self._last_id))
        self._data = []
        self._data_chars = 0
        self._event = ""
        self._id = None
