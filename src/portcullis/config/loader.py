"""Config file → bounded YAML → ``${ENV}`` interpolation → validated ``GatewayConfig``.

Why interpolation happens on the parsed tree and not on the text: an environment value can then
never inject YAML structure (a secret containing ``\\n  auth: none`` stays a string).
Errors name the path (``routes[2].auth.jwt.issuers``) and the rule, never the offending value,
because the value may be a secret.

Why bounds: ``portcullis check``, ``serve`` and every reload read this file, and a reload runs
beside live traffic. The file is read up to ``MAX_CONFIG_BYTES`` (16 MiB) plus one byte, so a
larger one is refused without being read whole; it must be UTF-8; the YAML parser refuses aliases,
deep nesting and huge values (``safe_yaml.py``, which says why aliases are refused outright); a value
may not grow past the same length through ``${ENV}``. Each of these is one ``ConfigFileError`` line
naming the file and where in it.

Routes are validated one by one before the whole document: pydantic holds the GIL for the length of
one ``model_validate`` call, so validating 20,000 routes in one call would stall the event loop for
that long even from a worker thread. A route that fails sends the document through one whole
validation, so the errors read exactly as they always have.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from portcullis.config.model import GatewayConfig, RouteConfig
from portcullis.config.safe_yaml import MAX_SCALAR_CHARS, parse_yaml
from portcullis.errors import ConfigError, ConfigFileError

__all__ = ["MAX_CONFIG_BYTES", "format_validation_error", "load_config", "load_config_text", "read_config_file"]

MAX_CONFIG_BYTES = 16 * 1024 * 1024

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate the config file at ``path``. Blocking: call it off the event loop."""
    return load_config_text(read_config_file(path), env=env, source=str(path))


def read_config_file(path: str | Path) -> str:
    """The file's text: at most ``MAX_CONFIG_BYTES``, UTF-8, or one ``ConfigFileError`` line."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigFileError(f"cannot read config file: {exc.strerror}", path=str(path)) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigFileError(f"refused: larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB", path=str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigFileError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at byte offset {exc.start})", path=f"{path}, line {line}"
        ) from None


def load_config_text(
    text: str, *, env: Mapping[str, str] | None = None, source: str = "<config>"
) -> GatewayConfig:
    """Validate config given as YAML text; ``source`` names it in errors about the text itself."""
    if len(text) > MAX_CONFIG_BYTES:  # characters: at least as many bytes
        raise ConfigFileError(f"refused: larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB", path=source)
    raw = parse_yaml(text, source=source)
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a mapping at the top level")
    resolved = _interpolate(raw, os.environ if env is None else env, "")
    routes = resolved.get("routes")
    if isinstance(routes, list):
        # On an error, the whole validation below reports every error, with its full path.
        with contextlib.suppress(ValidationError):
            resolved["routes"] = [RouteConfig.model_validate(route) for route in routes]
    try:
        return GatewayConfig.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def _interpolate(node: Any, env: Mapping[str, str], path: str) -> Any:
    if isinstance(node, str):
        def substitute(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"environment variable {name} is not set", path=path or "(top)")

        value = _ENV.sub(substitute, node)
        if len(value) > MAX_SCALAR_CHARS:
            raise ConfigError(f"refused: longer than {MAX_SCALAR_CHARS // 1024} KiB after ${{ENV}} interpolation",
                              path=path or "(top)")
        return value
    if isinstance(node, dict):
        return {k: _interpolate(v, env, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, env, f"{path}[{i}]") for i, v in enumerate(node)]
    return node


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``path: message``. Input values are never included."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        parts: list[str] = []
        for loc in err["loc"]:
            if isinstance(loc, int):
                parts.append(f"[{loc}]")
            elif loc in ("function-after[_references(), GatewayConfig]",):
                continue
            else:
                parts.append(f".{loc}" if parts else str(loc))
        where = "".join(parts) or "(top)"
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return "\n".join(lines)
