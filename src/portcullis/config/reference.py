"""Generate ``docs/config-reference.md`` from the config model's field descriptions.

Why generated: a reference written by hand drifts from the code. A test fails when the committed
file differs from what this module renders, so the docs change in the same commit as the model.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from portcullis.config.model import GatewayConfig

__all__ = ["render_reference"]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    for arg in typing.get_args(annotation):
        found.extend(_models_in(arg))
    return found


_PARSER_NAMES = {
    "parse_duration": "duration", "parse_byte_size": "size", "parse_rate": "rate", "_parse_cidr": "cidr",
    "_parse_header_name": "header name", "_parse_method": "method",
}


def _parsed_as(metadata: Any) -> str | None:
    for m in metadata:
        name = getattr(getattr(m, "func", None), "__name__", "")
        if name in _PARSER_NAMES:
            return _PARSER_NAMES[name]
    return None


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        args = typing.get_args(annotation)
        return _parsed_as(args[1:]) or _type_name(args[0])
    if origin in (types.UnionType, typing.Union):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin in (list, tuple):
        return f"list[{', '.join(_type_name(a) for a in typing.get_args(annotation))}]"
    if origin is dict:
        k, v = typing.get_args(annotation)
        return f"map[{_type_name(k)}, {_type_name(v)}]"
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
        if isinstance(value, BaseModel):
            return "(section defaults)"
        return "required" if value is Ellipsis else f"`{value!r}`".replace("'", '"')
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "(computed)"
        if isinstance(value, BaseModel):
            return "(section defaults)"
        return f"`{value!r}`".replace("'", '"')
    return "**required**"


def render_reference() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the config model by `portcullis config-reference`; do not edit by hand.",
        "Durations accept `250ms`, `30s`, `5m`, `1h`, `1d`; sizes accept `512`, `16KiB`, `1MiB`;",
        "rates accept `10/second`, `100/minute`, `5000/hour`, `20/10s`. Any string value may use",
        "`${ENV_VAR}` or `${ENV_VAR:-default}`.",
        "",
    ]
    seen: set[type[BaseModel]] = set()
    queue: list[tuple[str, type[BaseModel]]] = [("(top level)", GatewayConfig)]
    while queue:
        path, model = queue.pop(0)
        if model in seen:
            continue
        seen.add(model)
        lines += [f"## `{path}` — {model.__name__}", ""]
        lines += ["| key | type | default | description |", "| --- | --- | --- | --- |"]
        for name, field in model.model_fields.items():
            key = field.alias or name
            type_name = _parsed_as(field.metadata) or _type_name(field.annotation)
            cells = [f"`{key}`", type_name, _default(field), field.description or ""]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
            for sub in _models_in(field.annotation):
                prefix = "" if path == "(top level)" else path + "."
                queue.append((f"{prefix}{key}", sub))
        lines.append("")
    return "\n".join(lines)
