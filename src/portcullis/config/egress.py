"""The ``egress:`` section: which third-party APIs workflows and agents may reach, and how.

Every field here is enforced by the call's phases (``egress/call/``, composed by
``egress/executor.py``; the guard's also by ``portcullis egress check``): an option that is accepted
but not enforced would read like a protection that is not there.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from portcullis.config.egress_proxy import EgressProxyConfig
from portcullis.config.types import ByteSize, Cidr, Duration, HttpMethod, Rate, host_allowed
from portcullis.expressions import ExpressionError, compile_expression

__all__ = [
    "DEFAULT_PRIORITY_CLASSES",
    "SECRET_REFERENCE",
    "EgressBreakerConfig",
    "EgressBudgetsConfig",
    "EgressBulkheadConfig",
    "EgressConfig",
    "EgressCostRule",
    "EgressLlmConfig",
    "EgressOAuth2Config",
    "EgressPrioritiesConfig",
    "EgressRetryConfig",
    "EgressRouteConfig",
    "EgressRunModesConfig",
    "FullRunRequirement",
    "LlmBudgetsConfig",
    "LlmPriceConfig",
    "LlmScreeningConfig",
    "RunModeRule",
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
    adaptive_after: int | None = Field(
        5, ge=0, description="Failed attempts in a row at the endpoint beyond which a retry goes only with "
        "probability 1/failures (one success ends the streak); null: off.",
    )


class EgressBreakerConfig(_Model):
    failure_rate: float = Field(0.5, gt=0, le=1, description="Share of failed calls in the window that opens it.")
    slow_call: Duration = Field("10s", description="A call at least this slow counts as slow.")
    slow_call_rate: float = Field(1.0, gt=0, le=1, description="Share of slow calls that opens it (1.0: never).")
    min_calls: int = Field(10, ge=1, description="Calls the window needs before the rates count.")
    window: Duration = Field("60s", description="The window the rates are measured over (time-based, in 100 "
                             "buckets: a call leaves it at most a hundredth of the window late).")
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
    execution_max_lifetime: Duration | None = Field(
        None, description="Longest wall-clock life of an execution: its first call starts the clock, and calls "
        "after this are refused (403 `budget.execution_expired`). The start is remembered for this long plus a "
        "day; null: no limit.",
    )
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

# Priorities, bulkheads and run modes (egress/bulkhead.py, egress/run_mode.py).
DEFAULT_PRIORITY_CLASSES = ("critical", "high", "normal", "low", "bulk")


def _check_class_name(value: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", value):
        raise ValueError(f"{value!r}: a priority class is 1-32 of a-z, 0-9, '_' or '-', starting with a letter")
    return value


class EgressBulkheadConfig(_Model):
    max_concurrent: int = Field(ge=1, description="Calls to this endpoint in flight at once, per instance.")
    max_queue: int = Field(
        50, ge=0, description="Calls that may wait for a place; when full, a higher class displaces the newest "
        "waiter of the lowest class below it, else the newcomer is refused (503 `egress.shed`); 0: no queue.",
    )
    queue_timeout: Duration = Field("5s", description="Longest wait for a place; then 503 `egress.shed`.")
    retry_after: Duration = Field("1s", description="`Retry-After` sent with a shed call.")
    default_priority: str | None = Field(
        None, description="Class of a call that gets none from its workflow, consumer or header; default: "
        "`egress.priorities.default`.",
    )
    header_priorities: list[str] = Field(
        default_factory=list, description="Classes a caller may choose with the `X-Priority` header on this route; "
        "empty: the header is not read. Another value is refused (400).",
    )

    @model_validator(mode="after")
    def _names(self) -> EgressBulkheadConfig:
        for name in [*self.header_priorities, *([self.default_priority] if self.default_priority else [])]:
            _check_class_name(name)
        return self


class EgressPrioritiesConfig(_Model):
    classes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PRIORITY_CLASSES), min_length=1, max_length=16,
        description="Priority classes, highest first; a bulkhead serves higher classes first and sheds lower first.",
    )
    default: str = Field("normal", description="Class of a call nothing else classifies.")
    workflows: dict[str, str] = Field(
        default_factory=dict, description="Class by workflow id (`X-Workflow-Id`); wins over `consumers`.",
    )
    consumers: dict[str, str] = Field(default_factory=dict, description="Class by authenticated consumer (user).")

    @model_validator(mode="after")
    def _known(self) -> EgressPrioritiesConfig:
        for name in self.classes:
            _check_class_name(name)
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes: names must be distinct")
        for where, name in [("default", self.default), *(("workflows", v) for v in self.workflows.values()),
                            *(("consumers", v) for v in self.consumers.values())]:
            if name not in self.classes:
                raise ValueError(f"{where}: {name!r} is not one of the classes")
        return self


class RunModeRule(_Model):
    name: str = Field(description="Names the rule in the audit trail (`run_mode:full_run_rule:<name>`).")
    when: str = Field(
        description="A CEL expression that must be true: over `principal` (id, sub, method, scopes, roles, claims, "
        "key_id, issuer), `context` (route, workflow_id, execution_id, user, client_ip, run_mode), `request` "
        "(method, path, host, scheme) and `now`, as in ingress authorization rules.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", value):
            raise ValueError("rule names are 1-64 of letters, digits, '_', '.' or '-'")
        return value

    @field_validator("when")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            compiled = compile_expression(value)
        except ExpressionError as exc:
            raise ValueError(f"not a valid rule: {exc}") from None
        if compiled.uses_body:
            raise ValueError("an egress run-mode rule cannot read `body`")
        return value


class FullRunRequirement(_Model):
    scopes_any: list[str] = Field(default_factory=list, description="The caller needs one of these scopes.")
    roles_any: list[str] = Field(default_factory=list, description="The caller needs one of these roles.")
    rules: list[RunModeRule] = Field(default_factory=list, description="Every rule must hold.")

    @model_validator(mode="after")
    def _something(self) -> FullRunRequirement:
        if not (self.scopes_any or self.roles_any or self.rules):
            raise ValueError("name scopes_any, roles_any or rules (an empty requirement would read as a check)")
        return self


class EgressRunModesConfig(_Model):
    default: Literal["full_run", "test_run"] = Field(
        "full_run", description="Run mode of a call that names none (`X-Run-Mode`, or the transport's context).",
    )
    allow_validate_only: bool = Field(
        True, description="Answer `validate_only` calls (nothing is sent; the answer says what would happen, "
        "names of injected headers and secrets only).",
    )
    full_run_requires: FullRunRequirement | None = Field(
        None, description="What a `full_run` call needs on every route without its own `full_run_requires`.",
    )


# --- LLM-aware routes (`llm:` on an egress route) -------------------------------------------------
# Models only: what the block means is in portcullis.llm (usage, estimates, screening) and the
# reservation budgets in stores.ReservationStore; docs/egress.md, LLM routes, is the guide.


class LlmPriceConfig(_Model):
    input_per_million: float = Field(ge=0, description="Price of one million prompt tokens, in the budget's currency.")
    output_per_million: float = Field(ge=0, description="Price of one million generated tokens.")
    cache_read_per_million: float | None = Field(
        None, ge=0, description="Price of a million prompt tokens read from the provider's cache; null: the input "
        "price.",
    )
    cache_write_per_million: float | None = Field(
        None, ge=0, description="Price of a million prompt tokens written to the provider's cache; null: the input "
        "price.",
    )


class LlmBudgetsConfig(_Model):
    """Each budget is per route: the same user calling two LLM routes spends from each route's own."""

    execution_tokens: int | None = Field(None, ge=1, description="Tokens (in + out) one execution may spend.")
    execution_cost: float | None = Field(None, gt=0, description="Cost one execution may spend.")
    execution_window: Duration = Field(
        "24h", description="An execution's token and cost totals are forgotten this long after its first call.",
    )
    workflow_tokens_per_day: int | None = Field(None, ge=1, description="Tokens per workflow per day.")
    workflow_cost_per_day: float | None = Field(None, gt=0, description="Cost per workflow per day.")
    user_tokens_per_day: int | None = Field(None, ge=1, description="Tokens per authenticated user per day.")
    user_cost_per_day: float | None = Field(None, gt=0, description="Cost per authenticated user per day.")
    tokens_per_minute: int | None = Field(
        None, ge=1, description="Tokens per minute through this route, all callers together (the provider's TPM).",
    )
    tokens_per_day: int | None = Field(None, ge=1, description="Tokens per day through this route, all callers.")
    cost_per_day: float | None = Field(None, gt=0, description="Cost per day through this route, all callers.")

    def has_cost(self) -> bool:
        return any(v is not None for v in (self.execution_cost, self.workflow_cost_per_day, self.user_cost_per_day,
                                           self.cost_per_day))


class LlmScreeningConfig(_Model):
    control_chars: Literal["refuse", "strip", "allow"] = Field(
        "refuse", description="C0 controls (but tab, LF, CR), DEL and C1 controls in prompt text.",
    )
    invisible_chars: Literal["refuse", "strip", "allow"] = Field(
        "refuse", description="Unicode tag characters and bidi overrides/isolates: text a reader cannot see.",
    )
    patterns: list[str] = Field(
        default_factory=list, description="Python regular expressions refused anywhere in the prompt (matched on "
        "NFKC-normalised text). An example list, not a defence against prompt injection: see docs/egress.md, "
        "LLM routes. A pattern with nested repetition such as (a+)+ is refused (ReDoS).",
    )
    case_sensitive: bool = Field(False, description="Match `patterns` case-sensitively.")
    max_messages: int | None = Field(None, ge=1, description="Most messages (or input items) in one request.")
    max_message_chars: int | None = Field(None, ge=1, description="Longest single text in the prompt, in characters.")
    max_total_chars: int | None = Field(None, ge=1, description="Most prompt text in one request, in characters.")

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, values: list[str]) -> list[str]:
        for i, pattern in enumerate(values):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"patterns[{i}]: not a regular expression ({exc.msg})") from None
            if nested_repetition(pattern):
                raise ValueError(
                    f"patterns[{i}]: a repeated group that itself repeats (such as (a+)+ or (\\w+\\s?)*) can take "
                    "exponential time on a hostile prompt (ReDoS); write it without the nested repetition")
        return values


class EgressLlmConfig(_Model):
    provider: Literal["openai", "anthropic"] = Field(description="Whose request and answer format the route speaks.")
    default_max_output_tokens: int = Field(
        1024, ge=1, description="Output cap reserved (and written into the request) when the body names none.",
    )
    max_output_tokens: int | None = Field(
        None, ge=1, description="Most output a request may ask (its cap times `n`); more is refused before sending.",
    )
    prompt_estimate: Literal["utf8_bytes", "chars_div_4"] = Field(
        "utf8_bytes", description="How prompt tokens are estimated before sending: one per body byte (an upper "
        "bound for text) or characters / 4 (closer, can be low).",
    )
    max_request_bytes: ByteSize = Field("4MiB", description="Largest request body the route reads and estimates.")
    prices: dict[str, LlmPriceConfig] = Field(
        default_factory=dict, description="Price by model name, exact or `prefix*` (longest wins).",
    )
    default_price: LlmPriceConfig | None = Field(
        None, description="Price of a model `prices` does not name; null: such a request is refused.",
    )
    budgets: LlmBudgetsConfig = Field(default_factory=LlmBudgetsConfig, description="Token and cost budgets.")
    screening: LlmScreeningConfig | None = Field(None, description="Prompt screening and caps; null: none.")
    max_stream_bytes: ByteSize = Field("64MiB", description="Largest streamed answer; the stream is cut past it.")
    max_stream_duration: Duration = Field("10m", description="Longest a streamed answer may last; cut past it.")
    max_event_bytes: ByteSize = Field(
        "1MiB", description="Largest server-sent event read for usage; past it usage is unknown (charged in full).",
    )
    add_stream_usage: bool = Field(
        False, description="Ask OpenAI chat streams for their usage (`stream_options.include_usage`) when the caller "
        "did not: the caller then gets one more final chunk with empty `choices`. Without usage a stream is charged "
        "its whole reservation.",
    )

    @field_validator("prices")
    @classmethod
    def _models(cls, values: dict[str, LlmPriceConfig]) -> dict[str, LlmPriceConfig]:
        for name in values:
            if not name or len(name) > 200 or "*" in name[:-1] or name == "*":
                raise ValueError(f"{name!r}: a model name, or a prefix ending in a single `*` (use default_price "
                                 "for every other model)")
        return values

    @model_validator(mode="after")
    def _consistent(self) -> EgressLlmConfig:
        if self.budgets.has_cost() and not self.prices and self.default_price is None:
            raise ValueError("budgets: cost budgets need `prices` (or `default_price`)")
        if self.max_output_tokens is not None and self.default_max_output_tokens > self.max_output_tokens:
            raise ValueError("default_max_output_tokens: larger than max_output_tokens")
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
        "budgets. Clients must trust that CA (docs/egress.md, the proxy door, says what that means). Off: tunnels "
        "are opaque.",
    )
    retry: EgressRetryConfig = Field(default_factory=EgressRetryConfig, description="Retries of safe calls.")
    breaker: EgressBreakerConfig = Field(default_factory=EgressBreakerConfig, description="The circuit breaker.")
    bulkhead: EgressBulkheadConfig | None = Field(
        None, description="Concurrency cap and priority queue for this endpoint; null: no cap.",
    )
    test_run: bool = Field(
        False, description="Accept `test_run` calls; they spend their own budget counters, apart from full runs'.",
    )
    full_run_requires: FullRunRequirement | None = Field(
        None, description="What a `full_run` call needs here (replaces `egress.run_modes.full_run_requires`).",
    )
    llm: EgressLlmConfig | None = Field(
        None, description="The route calls an LLM provider: token and cost budgets reserved before sending and "
        "settled to the reported usage, streamed answers relayed unbuffered, prompt screening (docs/egress.md, "
        "LLM routes).",
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
    priorities: EgressPrioritiesConfig = Field(
        default_factory=EgressPrioritiesConfig, description="Priority classes for the routes' bulkheads.",
    )
    run_modes: EgressRunModesConfig = Field(
        default_factory=EgressRunModesConfig, description="`validate_only`, `test_run` and `full_run` calls.",
    )
    origin_check_ttl: Duration = Field(
        "1s", ge=0, description="How long a route's host, once resolved and found allowed, is not looked up again "
        "by each call's early check (the refusal before any limit or budget is spent); past it, calls go on while "
        "a lookup refreshes it, and through a resolver outage for up to 5 minutes. Every new connection is still "
        "resolved and checked, and goes only to the addresses checked then. 0: every call waits for a lookup.",
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
            self._check_bulkhead(i, route)
        return self

    def _check_bulkhead(self, i: int, route: EgressRouteConfig) -> None:
        if route.bulkhead is None:
            return
        classes = self.priorities.classes
        for name in [*route.bulkhead.header_priorities, route.bulkhead.default_priority or self.priorities.default]:
            if name not in classes:
                raise ValueError(f"routes[{i}].bulkhead: {name!r} is not one of egress.priorities.classes")

    def route(self, name: str) -> EgressRouteConfig | None:
        return next((r for r in self.routes if r.name == name), None)


def path_matches(pattern: str, path: str) -> bool:
    """``*`` matches one segment, a final ``**`` any remaining segments (at least one)."""
    want, rest = _pattern_segments(pattern)
    have = path.strip("/").split("/") if path != "/" else []
    if rest:
        return len(have) > len(want) and all(w in ("*", h) for w, h in zip(want, have, strict=False))
    return len(want) == len(have) and all(w in ("*", h) for w, h in zip(want, have, strict=True))


@functools.lru_cache(maxsize=1024)
def nested_repetition(pattern: str) -> bool:
    """Whether ``pattern`` repeats something that itself repeats (star height above one).

    Why refused: Python's ``re`` backtracks, and a nested repetition such as ``(a+)+$`` tries
    exponentially many ways to split a string that almost matches (CWE-1333, ReDoS). The screening
    patterns run on prompts an agent's caller shapes, on the event loop: one such prompt would stop
    the gateway. The check is on the parsed pattern (``re._parser``, what ``re.compile`` itself
    uses), so ``(?:a+)+``, ``(a*b?)*`` and ``(x|y+){2,}`` are all caught; a bounded ``?`` or ``{1}``
    is not a repetition. It is conservative: ``(\\s+\\w+)*`` cannot blow up (its parts are
    disjoint) and is refused all the same; such a pattern can be written without nesting. Overlapping
    alternatives under one repetition (``(a|a)*``) are not detected."""
    try:
        from re import _constants as c  # type: ignore[attr-defined]
        from re import _parser  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - a Python without the module re.compile uses
        return False
    repeats = (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", c.MAX_REPEAT))
    atomic = getattr(c, "ATOMIC_GROUP", None)  # Python 3.11+: (?>...)

    def walk(items: Any, inside: bool) -> bool:
        for op, av in items:
            if op in repeats:
                _, high, sub = av
                repeating = high is c.MAXREPEAT or high > 1
                if repeating and inside:
                    return True
                if walk(sub, inside or repeating):
                    return True
            elif op is c.SUBPATTERN:
                if walk(av[-1], inside):
                    return True
            elif op is c.BRANCH:
                if any(walk(branch, inside) for branch in av[1]):
                    return True
            elif op in (c.ASSERT, c.ASSERT_NOT):
                if walk(av[1], inside):
                    return True
            elif op is atomic:
                if walk(av, inside):
                    return True
            elif op is c.GROUPREF_EXISTS:
                if walk(av[1], inside) or (av[2] is not None and walk(av[2], inside)):
                    return True
        return False

    return walk(_parser.parse(pattern), False)


def _pattern_segments(pattern: str) -> tuple[tuple[str, ...], bool]:
    """A pattern's segments, and whether it ends in ``**`` (then left out): split once per pattern,
    not on every call it is matched against (patterns come from the config, so the cache stays small)."""
    want = pattern.strip("/").split("/") if pattern != "/" else []
    if want and want[-1] == "**":
        return tuple(want[:-1]), True
    return tuple(want), False
