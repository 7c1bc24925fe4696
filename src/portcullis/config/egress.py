"""The ``egress:`` section: which third-party APIs workflows and agents may reach, and how.

Why only these fields so far: an option that is accepted but not enforced reads like a protection
that is not there. The SSRF guard's settings are here because ``portcullis egress check --config
--route`` enforces them today; limits, budgets, breakers, retries, credential injection and
response caps join as the egress data path enforces them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from portcullis.config.types import Cidr, host_allowed

__all__ = ["EgressConfig", "EgressRouteConfig"]

_HOST_PATTERN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_*")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _check_host_patterns(values: list[str]) -> list[str]:
    out = []
    for raw in values:
        value = raw.strip().lower().rstrip(".")
        wildcard = value.startswith("*.")
        body = value[2:] if wildcard else value
        if not body or "*" in body or not set(body) <= _HOST_PATTERN_CHARS or body.startswith("."):
            raise ValueError(f"{raw!r}: expected an exact host name or *.suffix")
        out.append(value)
    return out


class EgressRouteConfig(_Model):
    name: str = Field(description="Route name: /egress/<name>/… and audit records use it.")
    url: str = Field(description="Base URL of the third-party API, e.g. https://api.github.com.")
    allow_http: bool = Field(False, description="Accept a plain http:// base URL (refused by default).")
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Extra allow-list for this route (exact names or *.suffix); empty: the URL's own host only.",
    )
    allow_networks: list[Cidr] = Field(
        default_factory=list,
        description="Private networks this route may reach (an on-premises API). Metadata names stay refused.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or not all(c.isascii() and (c.isalnum() or c in "_.-") for c in value) or len(value) > 63:
            raise ValueError("route names are 1-63 of letters, digits, '_', '.' or '-'")
        return value

    @field_validator("allow_hosts")
    @classmethod
    def _hosts(cls, values: list[str]) -> list[str]:
        return _check_host_patterns(values)

    @model_validator(mode="after")
    def _url(self) -> EgressRouteConfig:
        parts = urlsplit(self.url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("url: expected https://host[:port][/prefix]")
        if parts.scheme == "http" and not self.allow_http:
            raise ValueError("url: plain http:// needs allow_http: true on this route")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("url: a base URL cannot carry credentials, a query or a fragment")
        return self


class EgressConfig(_Model):
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Global allow-list (exact names or *.suffix); when set, every route's host must match it.",
    )
    routes: list[EgressRouteConfig] = Field(default_factory=list, description="Third-party APIs, by name.")

    @field_validator("allow_hosts")
    @classmethod
    def _hosts(cls, values: list[str]) -> list[str]:
        return _check_host_patterns(values)

    @model_validator(mode="after")
    def _unique(self) -> EgressConfig:
        names = [r.name for r in self.routes]
        if len(set(names)) != len(names):
            raise ValueError("routes: names must be unique")
        for i, route in enumerate(self.routes):
            host = (urlsplit(route.url).hostname or "").lower().rstrip(".")
            if self.allow_hosts and not host_allowed(host, self.allow_hosts):
                raise ValueError(f"routes[{i}].url: {host!r} is not in egress.allow_hosts")
        return self

    def route(self, name: str) -> EgressRouteConfig | None:
        return next((r for r in self.routes if r.name == name), None)
