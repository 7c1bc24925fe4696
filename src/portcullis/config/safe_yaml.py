"""YAML text → plain Python data, refusing documents built to exhaust the process that reads them.

Why not ``yaml.safe_load``: "safe" there means no arbitrary objects, not bounded work. A 458-byte
"billion laughs" file (nested anchors and aliases; CVE-2019-11253 hit Kubernetes the same way)
expands to billions of nodes once anything walks the tree, and a document nested a million levels
deep exhausts the stack. This loader is PyYAML's own SafeLoader pipeline with three checks added at
compose time, before any value is constructed:

- **Aliases are refused altogether** (``*name``, including merge keys written ``<<: *name``). We
  could instead count what aliases would expand to against a budget, but a gateway config gains
  little from them: a route repeated by alias is a route an auditor must expand in their head. One
  rule that needs no budget is easier to state and to trust. Anchors alone (``&name``) are harmless
  and accepted; merge keys with an inline mapping (``<<: {…}``) still work.
- **Nesting deeper than ``MAX_DEPTH``** is refused (a real config is under ten levels deep).
- **A scalar longer than ``MAX_SCALAR_CHARS``** is refused (the longest legitimate value, a PEM
  certificate chain or an inline JWK, is a few KiB).

Each refusal is one ``ConfigFileError`` naming the source, line and column. The size of the whole
document is bounded before parsing, by the caller (``loader.py``), which reads at most that many
bytes.

Events come from libyaml when PyYAML was built with it (it is on every platform we ship) and the
document is composed in Python on top of them, which is where the checks live; the speed is that of
``CSafeLoader``, whose constructor is Python too. What it refuses to do: parse YAML itself.
"""

from __future__ import annotations

from typing import Any, Protocol

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, CollectionStartEvent, ScalarEvent
from yaml.nodes import Node
from yaml.resolver import Resolver

from portcullis.errors import ConfigFileError

__all__ = ["MAX_DEPTH", "MAX_SCALAR_CHARS", "parse_yaml"]

MAX_DEPTH = 64
MAX_SCALAR_CHARS = 64 * 1024



class _Mark(Protocol):
    """Where an event starts: PyYAML's ``Mark`` or libyaml's."""

    @property
    def line(self) -> int: ...
    @property
    def column(self) -> int: ...


try:
    from yaml._yaml import CParser as _Events
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Events(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)


class _BoundedLoader(Composer, _Events, SafeConstructor, Resolver):
    """SafeLoader's pipeline; ``Composer`` comes first so that its ``compose_node`` (and ours) runs,
    not libyaml's own composer, which would resolve aliases without asking."""

    def __init__(self, stream: str, source: str) -> None:
        _Events.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._source = source
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            raise self._refuse(event.start_mark, "YAML aliases (*name, <<: *name) are not accepted in a "
                               "config; write the value out")
        if isinstance(event, ScalarEvent) and len(event.value) > MAX_SCALAR_CHARS:
            raise self._refuse(event.start_mark, f"a value longer than {MAX_SCALAR_CHARS // 1024} KiB")
        if not isinstance(event, CollectionStartEvent):
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise self._refuse(event.start_mark, f"nesting deeper than {MAX_DEPTH} levels")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _refuse(self, mark: _Mark | None, what: str) -> ConfigFileError:
        return ConfigFileError(f"refused: {what}", path=_where(self._source, mark))


def parse_yaml(text: str, *, source: str) -> Any:
    """Parse one YAML document. Raises ``ConfigFileError`` naming ``source``, line and column."""
    loader = _BoundedLoader(text, source)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigFileError(f"not valid YAML ({problem})", path=_where(source, mark)) from None
    except (ValueError, OverflowError):  # a timestamp with month 13, an integer of 5,000 digits
        raise ConfigFileError("not valid YAML (a value cannot be converted to its type)", path=source) from None
    finally:
        loader.dispose()


def _where(source: str, mark: _Mark | None) -> str:
    return f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else source
