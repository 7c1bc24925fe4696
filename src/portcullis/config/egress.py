"""The ``egress:`` section: which third-party APIs workflows and agents may reach, and how.

Every field here is enforced by ``egress/executor.py`` (and the guard's by ``portcullis egress
check``): an option that is accepted but not enforced would read like a protection that is not
there. Rate limits per endpoint and the entry points join as they are built.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from portcullis.config.egress_proxy import EgressProxyConfig
from portcullis.config.types import ByteSize, Cidr, Duration, HttpMethod, Rate, host_allowed

__all__ = [
    "SECRET_REFERENCE",
    "EgressBreakerConfig",
    "EgressBudgetsConfig",
    "EgressConfig",
    "EgressCostRule",
    "EgressOAuth2Config",
    "EgressRetryConfig",
    "EgressRouteConfig",
]

SECRET_REFERENCE = re.compile(r"\{secret:([a-z0-9][a-z0-9_.\-]{0,63})\}")

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


class EgressRetryConfig(_Model):
    max_attempts: int = Field(3, ge=1, le=10, description="Attempts including the first; 1 turns retries off.")
    base: Duration = Field("100ms", description="First backoff ceiling; doubles per retry (full jitter).")
    cap: Duration = Field("5s", description="Largest backoff ceiling.")
    retry_after_cap: Duration = Field("30s", description="Longest Retry-After honoured; longer fails the call now.")
    budget_ratio: float = Field(0.2, ge=0, le=1, description="Retries may add at most this share of recent calls.")
    budget_min_per_s: float = Field(
        1.0, ge=0, description="Retries always allowed on a quiet endpoint (per second, over a 10 s window)."
    )


class EgressBreakerConfig(_Model):
    failure_rate: float = Field(0.5, gt=0, le=1, description="Share of failed calls in the window that opens it.")
    slow_call: Duration = Field("10s", description="A call at least this slow counts as slow.")
    slow_call_rate: float = Field(1.0, gt=0, le=1, description="Share of slow calls that opens it (1.0: never).")
    min_calls: int = Field(10, ge=1, description="Calls the window needs before the rates count.")
    window: Duration = Field("60s", description="The window the rates are measured over (time-based).")
    window_calls: int = Field(0, ge=0, description="If set, measure over the last N calls instead of `window`.")
    open_for: Duration = Field("30s", description="How long it stays open before probing.")
    half_open_probes: int = Field(3, ge=1, description="Calls let through to probe; all must succeed to close.")


class EgressBudgetsConfig(_Model):
    execution_calls: int | None = Field(
        100, ge=0, description="Calls per execution (X-Execution-Id); 0 or null: no cap (only if written out)."
    )
    execution_window: Duration = Field("1h", description="An execution's budget resets this long after its first call.")
    execution_cost: float | None = Field(None, ge=0, description="Cost per execution (sum of route costs).")
    workflow_calls_per_hour: int | None = Field(None, ge=0, description="Calls per workflow per hour.")
    workflow_calls_per_day: int | None = Field(None, ge=0, description="Calls per workflow per day.")
    user_calls_per_day: int | None = Field(None, ge=0, description="Calls per authenticated user per day.")
    user_cost_per_day: float | None = Field(None, ge=0, description="Cost per authenticated user per day.")
    top_burners: int = Field(
        5, ge=0, le=50, description="How many workflows and users per budget `/metrics` names in "
        "`portcullis_egress_budget_top_used_ratio` (the fullest; executions are never named); 0: none.",
    )


_PATH_PATTERN = re.compile(r"^(/([A-Za-z0-9._~!$&'()+,;=:@%-]+|\*|\*\*))+/?$|^/$")


def _check_path_pattern(value: str) -> str:
    if not _PATH_PATTERN.match(value) or "**" in value.rstrip("/").rsplit("/", 1)[0].split("/"):
        raise ValueError(f"{value!r}: expected /segment/* /segments, with ** only as the last segment")
    return value


class EgressCostRule(_Model):
    path: str = Field(description="Path pattern: `*` is one segment, a final `**` is the rest.")
    methods: list[HttpMethod] = Field(default_factory=list, description="Methods it applies to; empty: any.")
    cost: float = Field(ge=0, description="What a matching call costs (instead of the route's `cost`).")

    _path = field_validator("path")(lambda cls, v: _check_path_pattern(v))


def _vault_reference(value: str) -> str:
    if not SECRET_REFERENCE.fullmatch(value):
        raise ValueError("expected a vault reference {secret:name}: credentials are never written in the config")
    return value


class PrivateKeyJwtConfig(_Model):
    key: str = Field(description="`{secret:name}`: the vault secret holding the PEM private key that signs the "
                     "client assertion (RFC 7523 section 2.2).")
    alg: str = Field("RS256", description="Signing algorithm: RS256, PS256 or ES256.")
    kid: str | None = Field(None, description="`kid` header of the assertion, if the provider wants one.")

    _key = field_validator("key")(lambda cls, v: _vault_reference(v))

    @field_validator("alg")
    @classmethod
    def _alg(cls, value: str) -> str:
        if value not in ("RS256", "PS256", "ES256"):
            raise ValueError("expected RS256, PS256 or ES256")
        return value


class EgressOAuth2Config(_Model):
    token_url: str = Field(description="The provider's token endpoint; checked by the SSRF guard like the route.")
    client_id: str = Field(description="The gateway's client id at the provider.")
    client_secret: str | None = Field(
        None, description="`{secret:name}`: the vault secret sent with HTTP Basic client authentication.",
    )
    private_key_jwt: PrivateKeyJwtConfig | None = Field(
        None, description="Authenticate with a signed client assertion instead of a secret.",
    )
    scope: str | None = Field(None, description="`scope` to ask for (space-separated).")
    audience: str | None = Field(None, description="`audience` parameter, for providers that take one.")
    resource: str | None = Field(None, description="`resource` parameter (RFC 8707 resource indicator).")
    refresh_before: Duration = Field(
        "60s", description="A token is replaced this long before it expires (or at half its life, if shorter).",
    )
    timeout: Duration = Field("10s", description="Longest wait for the token endpoint.")
    allow_http: bool = Field(False, description="Accept a plain http:// token URL (local testing only).")

    _secret = field_validator("client_secret")(lambda cls, v: v if v is None else _vault_reference(v))

    @model_validator(mode="after")
    def _one_method(self) -> EgressOAuth2Config:
        if (self.client_secret is None) == (self.private_key_jwt is None):
            raise ValueError("set exactly one of client_secret and private_key_jwt")
        parts = urlsplit(self.token_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("token_url: expected https://host[:port]/path")
        if parts.scheme == "http" and not self.allow_http:
            raise ValueError("token_url: plain http:// needs allow_http: true")
        if parts.username or parts.password or parts.fragment:
            raise ValueError("token_url: no credentials or fragment in the URL")
        return self


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
    methods: list[HttpMethod] = Field(default_factory=list, description="Methods allowed; empty: any.")
    paths: list[str] = Field(
        default_factory=list,
        description="Path patterns allowed under the base URL (`*` one segment, final `**` the rest); empty: any.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Headers set on every call, replacing the caller's; `{secret:NAME}` is filled from the vault.",
    )
    rate_limits: list[Rate] = Field(
        default_factory=list,
        description="Rates for this endpoint, all enforced at once: e.g. ['10/second', '5000/hour'].",
    )
    burst: int | None = Field(None, ge=1, description="Extra capacity of the shortest rate window.")
    rate_limit_per_workflow: bool = Field(
        False, description="Count the rates per workflow instead of once for every caller of the route."
    )
    cost: float = Field(0.0, ge=0, description="What one call costs against cost budgets.")
    costs: list[EgressCostRule] = Field(
        default_factory=list, description="Costs by path (and method), first match wins; otherwise `cost`."
    )
    calls_per_workflow_day: int | None = Field(None, ge=0, description="Calls to this route per workflow per day.")
    connect_timeout: Duration = Field("5s", description="Timeout to open a connection.")
    read_timeout: Duration = Field("30s", description="Timeout between bytes of the answer.")
    total_timeout: Duration = Field("60s", description="Timeout for the whole call, retries included.")
    max_response_bytes: ByteSize = Field("10MiB", description="Largest answer on the wire; more is a 502.")
    max_decoded_bytes: ByteSize | None = Field(
        "100MiB", description="Largest answer once decompressed (bomb guard); null: unchecked."
    )
    content_types: list[str] = Field(default_factory=list, description="Media types accepted; empty: any.")
    ca_file: str | None = Field(
        None, description="PEM file of the CAs this route's TLS certificate must chain to, instead of the system's "
        "(an on-premises API with a private CA); the host name is checked as always.",
    )
    max_redirects: int = Field(
        0, ge=0, le=10, description="Redirects followed (each hop passes the whole guard again); 0: none."
    )
    oauth2: EgressOAuth2Config | None = Field(
        None, description="Get the provider's access token with the client credentials grant (cached, refreshed "
        "before expiry, renewed once on a 401) and send it as `Authorization: Bearer`.",
    )
    intercept: bool = Field(
        False, description="Proxy door: terminate TLS of tunnels to this route with a certificate from the "
        "interception CA (`egress.proxy.ca`), so every request inside passes this route's rules, credentials and "
        "budgets. Clients must trust that CA (docs/egress-proxy.md says what that means). Off: tunnels are opaque.",
    )
    retry: EgressRetryConfig = Field(default_factory=EgressRetryConfig, description="Retries of safe calls.")
    breaker: EgressBreakerConfig = Field(default_factory=EgressBreakerConfig, description="The circuit breaker.")

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

    @field_validator("headers")
    @classmethod
    def _headers(cls, values: dict[str, str]) -> dict[str, str]:
        out = {}
        for name, value in values.items():
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name) or any(c in value for c in "\r\n\0"):
                raise ValueError(f"{name!r}: not a valid header")
            stripped = SECRET_REFERENCE.sub("", value)
            if "{secret:" in stripped:
                raise ValueError(f"{name}: secret references are {{secret:name}} with a-z 0-9 _ . -")
            out[name.lower()] = value
        return out

    @field_validator("paths")
    @classmethod
    def _paths(cls, values: list[str]) -> list[str]:
        return [_check_path_pattern(v) for v in values]

    @field_validator("content_types")
    @classmethod
    def _media(cls, values: list[str]) -> list[str]:
        return [v.strip().lower() for v in values]

    @model_validator(mode="after")
    def _url(self) -> EgressRouteConfig:
        parts = urlsplit(self.url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("url: expected https://host[:port][/prefix]")
        if parts.scheme == "http" and not self.allow_http:
            raise ValueError("url: plain http:// needs allow_http: true on this route")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("url: a base URL cannot carry credentials, a query or a fragment")
        if self.oauth2 is not None and "authorization" in self.headers:
            raise ValueError("headers: `oauth2` sets Authorization; do not set it too")
        if self.intercept and parts.scheme != "https":
            raise ValueError("intercept: only an https:// route is reached through a tunnel")
        return self


class EgressConfig(_Model):
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Global allow-list (exact names or *.suffix); when set, every route's host must match it.",
    )
    routes: list[EgressRouteConfig] = Field(default_factory=list, description="Third-party APIs, by name.")
    budgets: EgressBudgetsConfig = Field(
        default_factory=EgressBudgetsConfig, description="Call and cost budgets across routes."
    )
    proxy: EgressProxyConfig | None = Field(
        None, description="The forward-proxy door (`HTTPS_PROXY`): absolute-form requests and CONNECT tunnels, "
        "authenticated with an API key in Proxy-Authorization; off unless set.",
    )

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
            if route.intercept and (self.proxy is None or self.proxy.ca is None):
                raise ValueError(f"routes[{i}].intercept: needs egress.proxy.ca (made by `portcullis ca init`)")
            if route.oauth2 is not None:
                token_host = (urlsplit(route.oauth2.token_url).hostname or "").lower().rstrip(".")
                if self.allow_hosts and not host_allowed(token_host, self.allow_hosts):
                    raise ValueError(f"routes[{i}].oauth2.token_url: {token_host!r} is not in egress.allow_hosts")
        return self

    def route(self, name: str) -> EgressRouteConfig | None:
        return next((r for r in self.routes if r.name == name), None)


def path_matches(pattern: str, path: str) -> bool:
    """``*`` matches one segment, a final ``**`` any remaining segments (at least one)."""
    want = pattern.strip("/").split("/") if pattern != "/" else []
    have = path.strip("/").split("/") if path != "/" else []
    if want and want[-1] == "**":
        prefix = want[:-1]
        return len(have) > len(prefix) and all(w in ("*", h) for w, h in zip(prefix, have, strict=False))
    return len(want) == len(have) and all(w in ("*", h) for w, h in zip(want, have, strict=True))
