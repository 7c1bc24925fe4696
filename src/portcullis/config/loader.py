"""YAML text → ``${ENV}`` interpolation → validated ``GatewayConfig``.

Why interpolation happens on the parsed tree and not on the text: an environment value can then
never inject YAML structure (a secret containing ``\\n  auth: none`` stays a string).
Errors name the path (``routes[2].auth.jwt.issuers``) and the rule, never the offending value,
because the value may be a secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from portcullis.config.model import GatewayConfig
from portcullis.errors import ConfigError

__all__ = ["format_validation_error", "load_config", "load_config_text"]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate the config file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", path=str(path)) from None
    return load_config_text(text, env=env)


def load_config_text(text: str, *, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Validate config given as YAML text."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        raise ConfigError(f"not valid YAML ({getattr(exc, 'problem', None) or 'syntax error'})", path=where) from None
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a mapping at the top level")
    resolved = _interpolate(raw, os.environ if env is None else env, "")
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

        return _ENV.sub(substitute, node)
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
