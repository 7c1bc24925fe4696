"""The configuration model: one YAML file, validated once at load into frozen pydantic models.

Why pydantic with ``extra="forbid"`` everywhere: a misspelled key in a security config must be an
error, not a silently ignored protection. Every field carries a description; the config reference
in ``docs/config-reference.md`` is generated from them (``portcullis config-reference``).

Secure defaults: a route without ``auth`` requires an API key; ``auth: none`` must be written out.
Credentials are never read from the query string unless a route says ``allow_query_credentials``.
A credentialed CORS ``*`` is refused. JWT issuers must list their algorithms; ``none`` is refused and
HMAC algorithms cannot be mixed with asymmetric keys.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)

from portcullis.config.egress import SECRET_REFERENCE, EgressConfig, LlmScreeningConfig
from portcullis.config.tls import CertRuleConfig, MtlsAuthConfig, TlsConfig, XfccConfig
from portcullis.config.types import (
    ByteSize,
    Cidr,
    Duration,
    HeaderName,
    HeaderPattern,
    HttpMethod,
    Rate,
    parse_duration,
)
from portcullis.expressions import ExpressionError, compile_expression
from portcullis.http.headers import FRAMING_HEADERS, GATEWAY_SET_HEADERS, HOP_BY_HOP, REMOVED_BY_DEFAULT, pattern_covers
from portcullis.identity.admin_roles import RoleBook

__all__ = [
    "AdminConfig",
    "AdminConsoleConfig",
    "ApiKeyAuthConfig",
    "AttributeRule",
    "AuditConfig",
    "AuthConfig",
    "AuthorizeConfig",
    "CertRuleConfig",
    "CorsConfig",
    "EgressEntryConfig",
    "EgressSection",
    "GatewayConfig",
    "IntrospectionAuthConfig",
    "IntrospectionConfig",
    "JsonBodyConfig",
    "JwtAssertionAuthConfig",
    "JwtAuthConfig",
    "JwtIssuerConfig",
    "KeysConfig",
    "ListenConfig",
    "LogConfig",
    "MtlsAuthConfig",
    "RateLimitConfig",
    "ReloadConfig",
    "RequestConfig",
    "RouteConfig",
    "SecurityHeadersConfig",
    "SharedStateConfig",
    "ShieldConfig",
    "ShieldRouteConfig",
    "StoreConfig",
    "TlsConfig",
    "TracingConfig",
    "TracingExporterConfig",
    "UpstreamConfig",
    "XfccConfig",
]

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_HMAC_MIN_SECRET = {"HS256": 32, "HS384": 48, "HS512": 64}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_PATH_TEMPLATE = re.compile(r"^/([A-Za-z0-9._~!$&'()*+,=:@%-]*|\{[a-z_][a-z0-9_]*(:path)?\})?"
                            r"(/([A-Za-z0-9._~!$&'()*+,=:@%-]*|\{[a-z_][a-z0-9_]*(:path)?\}))*$")


class _Model(BaseModel):
    # validate_default: defaults written as "10s" or "1MiB" are converted like configured values.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("names are lowercase letters, digits, '_', '.' or '-' (at most 63)")
    return value


class ListenConfig(_Model):
    host: str = Field("127.0.0.1", description="Address the gateway listens on for API traffic.")
    port: int = Field(8080, ge=0, le=65535, description="Port for API traffic (0 picks a free port).")
    workers: int = Field(1, ge=1, le=64, description="Worker processes sharing the listening socket.")
    tls: TlsConfig | None = Field(None, description="Terminate TLS with these files; HSTS is sent only then.")
    max_header_bytes: ByteSize = Field(
        "16KiB", description="Largest total size of request headers; larger requests get 431."
    )
    graceful_timeout: Duration = Field(
        "10s", description="How long shutdown waits for in-flight requests to finish."
    )
    server: Literal["portcullis", "uvicorn"] = Field(
        "portcullis", description="HTTP server for API traffic: `portcullis` (our own: the limits, timeouts and caps "
        "below, refusals audited as problem documents) or `uvicorn` (the former server; only `max_header_bytes` "
        "and `graceful_timeout` apply). The admin listener always runs on uvicorn.",
    )
    max_target_bytes: ByteSize = Field(
        "8KiB", description="Longest request target (path and query); longer gets 414. Counted within "
        "`max_header_bytes`.",
    )
    max_header_count: int = Field(100, ge=1, le=10_000, description="Most header fields in one request (431).")
    max_body_bytes: ByteSize = Field(
        "1MiB", description="Body limit when no route names one (a route's `request.max_body_bytes` wins). The "
        "server reads and checks the whole body before the request is routed further (413 beyond), unless the "
        "route streams it (`request.body_buffering: streamed`: counted as it is forwarded).",
    )
    body_buffer_bytes: ByteSize = Field(
        "64KiB", description="Request bodies up to this size are held in memory; larger ones spill to a private "
        "(0600, already unlinked) temporary file.",
    )
    first_byte_timeout: Duration = Field(
        "10s", description="A new connection that sends nothing for this long is closed (no answer, audited). "
        "Over TLS it also bounds the handshake, before the first request byte is waited for.",
    )
    head_timeout: Duration = Field(
        "10s", description="From a request's first byte to the end of its header block (slowloris); 408 beyond.",
    )
    body_timeout: Duration = Field(
        "30s", description="Time allowed for a request body, plus one second per `body_min_rate` bytes "
        "received; 408 beyond (slow uploads). On a streamed route, time the body waits for the gateway (before "
        "its policies are done, or while the upstream reads slower than the client sends) is not counted.",
    )
    body_min_rate: ByteSize = Field(
        "8KiB", description="Bytes per second a body upload earns in extra time on top of `body_timeout`.",
    )
    keepalive_timeout: Duration = Field(
        "5s", description="An idle kept-alive connection is closed after this long.",
    )
    write_timeout: Duration = Field(
        "30s", description="A client that leaves `write_buffer_bytes` unread for this long is cut, and the "
        "upstream answer it held is released.",
    )
    write_buffer_bytes: ByteSize = Field(
        "64KiB", description="Response bytes buffered per connection before the gateway waits for the client "
        "to read (flow control).",
    )
    max_stalled_responses: int = Field(
        32, ge=1, le=1_000_000, description="Most responses waiting at once on clients that leave "
        "`write_buffer_bytes` unread. A waiting response keeps what it holds (an upstream connection), so "
        "one wait too many cuts the connection that has waited longest: a client that never reads. Keep it "
        "well below every upstream's `pool_size`.",
    )
    max_connections: int = Field(
        4096, ge=1, le=1_000_000, description="Most open client connections per worker process; beyond, 503 "
        "and close. Lowered at start to half the process's open-file limit, so upstream connections and files "
        "always find a descriptor.",
    )
    max_connections_per_ip: int = Field(
        256, ge=1, le=1_000_000, description="Most open connections from one peer address; beyond, 503 and "
        "close. Peers in `trusted_proxies` count only towards `max_connections`.",
    )

    @field_validator("first_byte_timeout", "head_timeout", "body_timeout", "keepalive_timeout", "write_timeout",
                     "max_target_bytes", "max_body_bytes", "body_buffer_bytes", "body_min_rate",
                     "write_buffer_bytes")
    @classmethod
    def _listen_positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be more than 0")
        return value


class AdminOperatorsConfig(_Model):
    issuer: str = Field(description="Name of the `jwt_issuers` entry whose tokens operators present (OIDC).")
    roles_claim: str | None = Field(
        None, description="Claim naming the operator's admin roles (list or space-separated); default: the issuer's "
        "`roles_claim`. Names that are not admin roles are ignored; a token with none may call nothing.",
    )
    consumers_claim: str = Field(
        "portcullis_consumers",
        description="Claim listing the consumers a `developer` operator owns (what the `*_own` permissions cover).",
    )


class AdminFailedAuthConfig(_Model):
    max_failures: int = Field(10, ge=1, description="Failed admin authentications allowed per client address per "
                              "`window` before every request from it gets 429.")
    window: Duration = Field("1m", description="The window the failures are counted in.")


class AdminConsoleConfig(_Model):
    enabled: bool = Field(True, description="Serve the web console under /console on the admin listener (sign-in "
                          "with an admin token or an operator JWT; the JSON API never accepts its cookie).")
    idle_timeout: Duration = Field("15m", gt=0, description="A console session unused this long ends.")
    lifetime: Duration = Field("8h", gt=0, description="A console session ends this long after sign-in, used or not.")
    max_sessions: int = Field(1000, ge=1, le=100_000, description="Console sessions held at once; signing in past "
                              "it ends the least recently used one.")


class AdminConfig(_Model):
    enabled: bool = Field(True, description="Serve the admin API, /healthz, /readyz and /metrics on a separate "
                          "listener.")
    host: str = Field("127.0.0.1", description="Admin listener address. Keep it off public interfaces.")
    port: int = Field(9090, ge=0, le=65535, description="Admin listener port.")
    tls: TlsConfig | None = Field(None, description="Serve the admin listener over TLS with these files.")
    allow_plaintext_admin: bool = Field(
        False, description="Allow a non-loopback admin listener without `tls` (`portcullis check` and `serve` refuse "
        "it otherwise: admin tokens would cross the network in clear text).",
    )
    token_pepper: SecretStr | None = Field(
        None, description="Secret mixed into every admin token hash (HMAC-SHA256), at least 32 characters, from "
        "${ENV}. Default: `keys.pepper`. Admin tokens need one of the two.",
    )
    operators: AdminOperatorsConfig | None = Field(
        None, description="Accept operator JWTs from an OIDC issuer besides admin tokens.",
    )
    roles: dict[str, list[str]] = Field(
        default_factory=dict, description="Custom roles: name → admin permissions (see the operator guide). The "
        "built-in developer, admin, security and compliance cannot be redefined.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host header names the admin listener answers to, besides localhost, "
        "127.0.0.1, [::1] and `host` (DNS-rebinding defence: any other Host gets 421).",
    )
    allowed_origins: list[str] = Field(
        default_factory=list, description="Origins (scheme://host[:port]) whose browser requests are accepted; a "
        "request with any other Origin, or marked cross-site by Sec-Fetch-Site, gets 403 (CSRF defence).",
    )
    metrics_public: bool = Field(
        False, description="Serve /metrics without credentials. Default: a token with `metrics.read` (Prometheus: "
        "`authorization: {credentials_file: ...}`).",
    )
    console: AdminConsoleConfig = Field(default_factory=AdminConsoleConfig,
                                        description="The web console on this listener.")
    failed_auth: AdminFailedAuthConfig = Field(
        default_factory=AdminFailedAuthConfig, description="Throttle for failed admin authentication."
    )

    @field_validator("token_pepper")
    @classmethod
    def _pepper_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("the admin token pepper must be at least 32 characters")
        return value

    @field_validator("roles")
    @classmethod
    def _known_permissions(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        RoleBook(value)  # raises ValueError naming an unknown permission or a redefined built-in role
        return value

    @property
    def is_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "::1", "localhost") or self.host.startswith("127.")

    @model_validator(mode="after")
    def _no_plaintext_tokens_on_the_network(self) -> AdminConfig:
        if self.enabled and not self.is_loopback and self.tls is None and not self.allow_plaintext_admin:
            raise ValueError(
                f"the admin listener on {self.host} (not loopback) needs `admin.tls`, or "
                "`allow_plaintext_admin: true` when something in front of it terminates TLS"
            )
        return self


class ReloadConfig(_Model):
    timeout: Duration = Field(
        "30s", description="Longest a reload may spend reading, checking and compiling the new config (off the "
        "event loop). Past it the reload is refused and the previous config keeps serving.",
    )
    min_interval: Duration = Field(
        "1s", description="Reloads start at most once per this interval, and one runs at a time. `POST /reload` "
        "beyond that gets 429 with Retry-After; SIGHUPs and other instances' reload events are coalesced into one "
        "reload, run as soon as allowed.",
    )

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("the reload timeout must be more than 0s")
        return value


class LogConfig(_Model):
    format: Literal["text", "json"] = Field(
        "text", description="`text`: one readable line per record (time, level, logger, message), a traceback "
        "below it. `json`: one JSON object per line on stderr with `time` (ISO 8601 UTC, milliseconds), `level`, "
        "`logger`, `message`, `request_id` while a request is handled, and `exc_type` and `exc` (the traceback as "
        "one string) for an exception. Either way keys, admin tokens, JWTs and bearer credentials are masked. The "
        "ready line `Portcullis listening on ...` stays a plain line on stdout. Read at start; a reload does not "
        "change it.",
    )
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe level written. `portcullis serve --log-level`, when given, wins.",
    )


class ControlsConfig(_Model):
    refresh_interval: Duration = Field(
        "5s", description="Every instance re-reads the incident controls (blocks, emergency limits) from the store "
        "this often, besides the shared-state event that makes a change apply everywhere within a second: the bound "
        "on how long a missed event or a Redis outage can leave an instance behind (a change applies from the next "
        "start).",
    )
    emergency_restore: Duration = Field(
        "10m", description="How long an emergency limit takes to ramp back from its factor to the full limits after "
        "its duration, when the act does not say (linear; 0s: at once).",
    )

    @field_validator("refresh_interval")
    @classmethod
    def _sensible_interval(cls, value: float) -> float:
        if not 0.5 <= value <= 300:
            raise ValueError("the refresh interval must be between 0.5s and 300s")
        return value


class AnomalyConfig(_Model):
    enabled: bool = Field(
        True, description="Learn a baseline per route, egress endpoint and consumer (volume, error rate, p95 latency, "
        "failed authentications, egress budget burn) and report departures: a security audit event, "
        "`portcullis_anomalies_total{kind}` and the admin API's `GET /anomalies`. Observe-only: nothing is refused "
        "because of it.",
    )
    window: Duration = Field("1m", description="Each window's traffic is compared with the baseline, then learned.")
    baseline_windows: int = Field(60, ge=2, le=10_080, description="How many windows the baseline mostly remembers "
                                  "(the EWMA's span).")
    warmup_windows: int = Field(30, ge=1, description="Windows of history a subject needs before it can be flagged.")
    volume_factor: float = Field(3.0, gt=1, description="Flag a window with more than this times the usual volume.")
    error_rate_factor: float = Field(2.0, gt=1, description="Flag a 5xx share above this times the usual share.")
    latency_factor: float = Field(2.0, gt=1, description="Flag a p95 latency above this times the usual p95.")
    auth_failure_factor: float = Field(3.0, gt=1, description="Flag failed authentications above this times the "
                                       "usual count.")
    budget_burn_factor: float = Field(3.0, gt=1, description="Flag an egress endpoint or consumer spending its "
                                      "budgets faster than this times usual (burn: the share of its tightest budget "
                                      "each call spends, summed per window).")
    min_budget_burn: float = Field(0.05, gt=0, description="A window must burn at least this much of a budget (0.05: "
                                   "5 %) before burn can be flagged.")
    min_requests: int = Field(20, ge=1, description="A window needs this many requests before volume, errors or "
                              "latency can be flagged (a quiet route's 1 to 4 is no spike).")
    max_subjects: int = Field(10_000, ge=1, description="Most routes and consumers tracked; more are not (memory "
                              "stays bounded whatever consumer names clients make up).")
    response: Literal["none", "throttle", "block"] = Field(
        "none", description="Automatic response to a volume spike, off by default: `throttle` applies an emergency "
        "limit (`response_factor`) to the route or consumer, `block` blocks the consumer (a route is throttled); each "
        "for `response_for`, made by the actor `anomaly:auto` and recorded like an operator's act.",
    )
    response_for: Duration = Field("15m", description="How long an automatic response lasts (it then expires, and an "
                                   "emergency limit ramps back over `controls.emergency_restore`).")
    response_factor: float = Field(0.25, gt=0, lt=1, description="The share of every limit an automatic throttle "
                                   "keeps.")
    webhook: str | None = Field(
        None, description="POST each detection as JSON to this http(s) URL (best effort: queued up to 100, sent "
        "once with `webhook_timeout`, never retried; the audit trail is the record).",
    )
    webhook_timeout: Duration = Field("5s", description="Longest one webhook POST may take.")
    webhook_secret: SecretStr | None = Field(
        None, description="Sign each webhook body: `X-Portcullis-Signature: sha256=<HMAC-SHA256 hex>`, from ${ENV}.",
    )

    @field_validator("webhook")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("the webhook is an http:// or https:// URL")
        return value

    @field_validator("window")
    @classmethod
    def _window_sensible(cls, value: float) -> float:
        if not 1 <= value <= 3600:
            raise ValueError("the anomaly window must be between 1s and 1h")
        return value


class TracingExporterConfig(_Model):
    endpoint: str | None = Field(
        None, description="The collector's OTLP/HTTP URL (protobuf): `http(s)://host:4318` gets `/v1/traces` "
        "appended; a URL with another path is used as written. Required when tracing is enabled.",
    )
    headers: dict[HeaderName, SecretStr] = Field(
        default_factory=dict, description="Headers sent with every export (a hosted collector's API key: write "
        "the value as ${ENV}).",
    )
    timeout: Duration = Field("10s", description="Longest one export request may take.")
    schedule_delay: Duration = Field("2s", description="Spans are sent in batches at least this often.")
    max_queue_size: int = Field(
        2048, ge=1, description="Most finished spans waiting for export per process; more are dropped (counted by "
        "the SDK, never blocking a request).",
    )

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the OTLP endpoint is an http:// or https:// URL")
        if parts.username or parts.password or parts.fragment:
            raise ValueError("the OTLP endpoint cannot carry credentials or a fragment (use `headers`)")
        return value

    @property
    def traces_url(self) -> str | None:
        """The URL spans are POSTed to."""
        if self.endpoint is None:
            return None
        return self.endpoint.rstrip("/") + "/v1/traces" if urlsplit(self.endpoint).path in ("", "/") else self.endpoint


# The modules `tracing.enabled` needs: the `tracing` extra (opentelemetry-sdk and the OTLP/HTTP exporter).
_TRACING_MODULES = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter")


class TracingConfig(_Model):
    enabled: bool = Field(
        False, description="Record OpenTelemetry spans (a server span per request, a client span per upstream call "
        "and per egress attempt) and export them over OTLP/HTTP. Needs the `tracing` extra "
        "(`pip install 'portcullis-gateway[tracing]'`). Off: no OpenTelemetry module is loaded; a valid incoming "
        "`traceparent` is passed on unchanged and a malformed one is removed. Read at start; a reload does not "
        "change it.",
    )
    service_name: str = Field("portcullis", min_length=1, description="The `service.name` resource attribute.")
    sample_ratio: float = Field(
        1.0, ge=0, le=1, description="Share of new traces recorded (by trace id). A trace continued from a "
        "trusted peer follows that peer's sampled flag instead.",
    )
    trusted_peers: list[Cidr] = Field(
        default_factory=list, description="Socket peers (CIDRs) whose `traceparent` / `tracestate` are continued. "
        "From any other peer a new trace is started and the incoming one, if valid, is only a link. Empty: every "
        "request starts a new trace.",
    )
    exporter: TracingExporterConfig = Field(
        default_factory=TracingExporterConfig, description="Where spans go (OTLP over HTTP, batched in a thread).",
    )

    @model_validator(mode="after")
    def _usable(self) -> TracingConfig:
        if not self.enabled:
            return self
        if self.exporter.endpoint is None:
            raise ValueError("tracing.exporter.endpoint is required when tracing is enabled")
        for module in _TRACING_MODULES:
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                raise ValueError("tracing.enabled needs the tracing extra: pip install 'portcullis-gateway[tracing]'")
        return self


class StoreConfig(_Model):
    url: str = Field(
        "sqlite:///portcullis.db",
        description="Where consumers, key hashes, vault secrets and the audit table live: sqlite:///PATH for one "
        "machine (migrated on open), postgresql://USER@HOST:PORT/DB when several instances share them (migrated by "
        "`portcullis db upgrade`; a gateway refuses a schema it does not know). Put a password in ${ENV}.",
    )
    schema_name: str | None = Field(
        None, alias="schema",
        description="PostgreSQL only: the schema the tables live in (search_path), so several gateways can share "
        "one database. Default: the server's search_path (public).",
    )
    pool_size: int = Field(10, ge=1, le=200, description="PostgreSQL only: most connections per gateway process.")
    statement_timeout: Duration = Field(
        "5s", description="PostgreSQL only: longest a statement may run before the database cancels it."
    )
    connect_timeout: Duration = Field("5s", description="PostgreSQL only: longest wait for a connection.")

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("supported store URLs: sqlite:///PATH, postgresql://USER@HOST:PORT/DB")
        if not value.startswith("sqlite:///"):
            try:
                urlsplit(value).port  # noqa: B018 - a port that is not a number raises here
            except ValueError:
                raise ValueError("the PostgreSQL URL's port must be a number") from None
        return value

    @field_validator("schema_name")
    @classmethod
    def _schema(cls, value: str | None) -> str | None:
        if value is not None and (not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value) or value.startswith("pg_")):
            raise ValueError("a schema name is [a-z_][a-z0-9_]{0,62}, not starting with pg_")
        return value

    @property
    def is_postgres(self) -> bool:
        return not self.url.startswith("sqlite:///")

    @property
    def sqlite_path(self) -> str:
        return self.url.removeprefix("sqlite:///")


DEFAULT_STALE_IF_ERROR = "5m"  # keys.stale_if_error's default, and what applies without a keys section


class KeysConfig(_Model):
    pepper: SecretStr = Field(
        description="Server-side secret mixed into every API key hash (HMAC-SHA256). Set it from ${ENV}; "
        "changing it invalidates every key."
    )
    cache_ttl: Duration = Field(
        "5s", description="How long a key lookup is cached. Revocation on this instance clears it at once."
    )
    stale_if_error: Duration = Field(
        DEFAULT_STALE_IF_ERROR, description="While the key store is unreachable, a key that was valid when last "
        "read from it keeps working for this long after that read (RFC 5861's stale-if-error); counted from the "
        "read, so it only helps when longer than `cache_ttl`. Revocations heard from other instances and "
        "`expires_at` still apply at once; unknown keys get 503. The same bound applies to admin tokens and to "
        "vault secrets (a secret read before is still injected). 0 turns it off.",
    )

    @field_validator("pepper")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 32:
            raise ValueError("the pepper must be at least 32 characters")
        return value


class IntrospectionConfig(_Model):
    endpoint: str | None = Field(
        None, description="The RFC 7662 introspection endpoint; omitted, it is read from the issuer's discovery "
        "document (`discovery: true`).",
    )
    client_id: str = Field(description="The gateway's client id at the provider (HTTP Basic client authentication).")
    client_secret: SecretStr = Field(
        description="The gateway's client secret: `${ENV}`, or `{secret:name}` to read it from the vault.",
    )
    timeout: Duration = Field("3s", description="Longest wait for one introspection; past it the request gets 503.")
    cache_ttl: Duration = Field(
        "60s", description="A positive answer is reused at most this long, and never past the token's `exp`: a "
        "token revoked at the provider still passes for up to this long.",
    )
    negative_cache_ttl: Duration = Field(
        "10s", description="An inactive or refused token is answered from memory for this long.",
    )
    cache_size: int = Field(10000, ge=0, description="Most answers kept (by token hash; least recently used out).")
    max_response_bytes: ByteSize = Field("64KiB", description="Larger introspection responses are refused (503).")

    @field_validator("endpoint")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and (urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname):
            raise ValueError("expected an absolute https URL")
        return value


class JwtIssuerConfig(_Model):
    name: str = Field(description="Name routes use to refer to this issuer.")
    issuer: str = Field(description="Exact expected `iss` claim.")
    audiences: list[str] = Field(min_length=1, description="Accepted `aud` values; one must match.")
    algorithms: list[str] = Field(
        min_length=1, description="Allowed `alg` values. Never `none`; HMAC and asymmetric cannot mix."
    )
    jwks_uri: str | None = Field(None, description="Where the issuer publishes its JWKS (HTTPS).")
    discovery: bool = Field(
        False, description="Read `<issuer>/.well-known/openid-configuration` for the `jwks_uri` (and the "
        "introspection endpoint); its `issuer` must equal `issuer` exactly. Cached and refreshed on the "
        "`jwks_cache_ttl` and `jwks_min_refresh_interval` rules.",
    )
    discovery_hosts: list[str] = Field(
        default_factory=list, description="Hosts (`host` or `host:port`) besides the issuer's own origin that the "
        "discovery document may send key fetches and introspection to; any other is refused.",
    )
    introspection: IntrospectionConfig | None = Field(
        None, description="Opaque access tokens are checked at the provider (RFC 7662) for routes with "
        "`auth.introspection`.",
    )
    keys: list[dict[str, Any]] = Field(
        default_factory=list, description="Inline public JWKs, instead of or besides `jwks_uri`."
    )
    secret: SecretStr | None = Field(None, description="Shared secret for HS* algorithms only.")
    allow_http_jwks: bool = Field(
        False, description="Allow plain HTTP for the `jwks_uri`, discovery and introspection (only for local "
        "development and tests)."
    )
    required_claims: list[str] = Field(
        default_factory=lambda: ["exp"],
        description="Claims that must be present (exp, iss and aud are always checked when present).",
    )
    leeway: Duration = Field("30s", description="Clock skew tolerated for exp, nbf and iat.")
    consumer_claim: str = Field("sub", description="Claim that names the consumer.")
    scopes_claim: str = Field("scope", description="Claim holding scopes (space-separated string or list).")
    roles_claim: str = Field("roles", description="Claim holding roles (list or space-separated string).")
    jwks_cache_ttl: Duration = Field(
        "10m",
        description="How long a fetched JWKS is trusted: a key the issuer withdraws stops verifying within this time, "
        "tokens already cached included.",
    )
    jwks_min_refresh_interval: Duration = Field(
        "30s",
        description="An unknown `kid` refreshes the JWKS at most once per this interval; the `jwks_cache_ttl` "
        "refresh never waits for it.",
    )
    jwks_timeout: Duration = Field("3s", description="Timeout for one JWKS fetch.")
    max_token_bytes: ByteSize = Field("8KiB", description="Longer tokens are refused before parsing.")

    _name = field_validator("name")(_check_name)

    @field_validator("algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        for alg in value:
            if alg.lower() == "none":
                raise ValueError("the `none` algorithm is never allowed")
            if alg not in ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS:
                raise ValueError(f"unknown algorithm {alg!r}")
        return value

    @model_validator(mode="after")
    def _key_material(self) -> JwtIssuerConfig:
        algs = set(self.algorithms)
        if algs & HMAC_ALGORITHMS and algs & ASYMMETRIC_ALGORITHMS:
            raise ValueError("an issuer cannot allow both HMAC (HS*) and asymmetric algorithms")
        if algs & HMAC_ALGORITHMS:
            if self.secret is None or self.jwks_uri or self.keys:
                raise ValueError("HS* algorithms need `secret` and no public keys")
            # RFC 7518 section 3.2: the key must be at least as long as the hash output.
            needed = max(_HMAC_MIN_SECRET[a] for a in algs & HMAC_ALGORITHMS)
            if len(self.secret.get_secret_value().encode()) < needed:
                raise ValueError(f"an HS* secret for {sorted(algs)} must be at least {needed} bytes")
        else:
            if self.secret is not None:
                raise ValueError("`secret` is only for HS* algorithms")
            if not self.jwks_uri and not self.keys and not self.discovery:
                raise ValueError("set `jwks_uri`, inline `keys` or `discovery: true`")
        if self.discovery:
            if self.jwks_uri:
                raise ValueError("`discovery` reads the jwks_uri from the provider: leave `jwks_uri` out")
            parts = urlsplit(self.issuer)
            if not parts.hostname or parts.query or parts.fragment or parts.username is not None:
                raise ValueError("`discovery` needs an issuer that is an https URL without query or fragment")
            if parts.scheme != "https" and not (parts.scheme == "http" and self.allow_http_jwks):
                raise ValueError("`discovery` needs an https issuer (allow_http_jwks is for local testing)")
        if self.introspection is not None:
            endpoint = self.introspection.endpoint
            if endpoint is None and not self.discovery:
                raise ValueError("introspection.endpoint: set it, or `discovery: true` to read it from the provider")
            if endpoint is not None and urlsplit(endpoint).scheme != "https" and not self.allow_http_jwks:
                raise ValueError("introspection.endpoint must be https (allow_http_jwks is for local testing)")
        if self.jwks_uri:
            scheme = urlsplit(self.jwks_uri).scheme
            if scheme != "https" and not (scheme == "http" and self.allow_http_jwks):
                raise ValueError("`jwks_uri` must be https (allow_http_jwks is for local testing)")
        return self


class ApiKeyAuthConfig(_Model):
    headers: list[HeaderName] = Field(
        default_factory=lambda: ["x-api-key"],
        description="Headers an API key is read from. `Authorization: Bearer pcl_…` is always accepted too.",
    )
    allow_query_credentials: bool = Field(
        False, description="Also read the key from the query string (leaks into logs; avoid)."
    )
    query_param: str = Field("api_key", description="Query parameter read when allowed.")


class JwtAuthConfig(_Model):
    issuers: list[str] = Field(
        default_factory=list, description="Names of accepted issuers; empty means every configured issuer."
    )


class IntrospectionAuthConfig(_Model):
    issuer: str = Field(description="The `jwt_issuers` entry (with `introspection`) that opaque tokens are sent to.")


class JwtAssertionAuthConfig(_Model):
    header: HeaderName = Field(
        "x-jwt-assertion", description="The header a trusted mesh or proxy asserts the caller's identity in, as a "
        "JWT. Always removed before the request goes upstream.",
    )
    issuers: list[str] = Field(
        default_factory=list, description="Names of `jwt_issuers` whose keys verify the assertion; empty: any.",
    )
    trusted_peers: list[Cidr] = Field(
        default_factory=list, description="Socket peers whose assertion is believed; empty: `trusted_proxies`. "
        "From any other peer the header is ignored.",
    )


_SIGNATURE_COMPONENT = re.compile(
    r"@(method|target-uri|authority|scheme|request-target|path|query)|[a-z0-9!#$%&'*+.^_`|~-]+"
)


SignatureAlgorithm = Literal["hmac-sha256", "ed25519"]


def _every_signature_algorithm() -> list[SignatureAlgorithm]:
    return ["hmac-sha256", "ed25519"]


class SignatureAuthConfig(_Model):
    algorithms: list[SignatureAlgorithm] = Field(
        default_factory=_every_signature_algorithm, min_length=1,
        description="Key algorithms accepted on this route (a key has exactly one, fixed when it is created).",
    )
    components: list[str] | None = Field(
        None, description="Components every signature must cover (RFC 9421 names: `@method`, `@authority`, "
        "`@path`, `@query`, `@target-uri`, `@request-target`, `@scheme`, or lowercase header names). Default: "
        "`@method`, `@authority`, `@path` (or `@target-uri`), and `@query` when the request has a query. "
        "`content-digest` is always required when the request has a body.",
    )
    skew: Duration = Field(
        "300s", description="How far the signature's `created` may be from the gateway's clock, in either "
        "direction; nonces are remembered for as long as a signature can be accepted.",
    )
    max_header_bytes: int = Field(
        4096, ge=256, le=65536, description="Most bytes of `Signature-Input` plus `Signature`; more is refused.",
    )

    @field_validator("components")
    @classmethod
    def _known_components(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not _SIGNATURE_COMPONENT.fullmatch(name):
                raise ValueError(f"{name!r} is not a supported component (derived `@…` names or lowercase headers)")
        if value is not None and len(set(value)) != len(value):
            raise ValueError("components must not repeat")
        return value


class WebhookSignatureAuthConfig(_Model):
    consumer: str = Field(
        pattern=r"^[A-Za-z0-9_.@\-]{1,64}$", description="The sender, as the principal's consumer id (audit, limits)."
    )
    secrets: list[str] = Field(
        min_length=1, max_length=4, description="Names of vault secrets the sender signs with; any one verifies "
        "(two while the sender rotates). Set them with `portcullis secrets set NAME`.",
    )
    header: HeaderName = Field("x-webhook-signature", description="The header carrying `t=<unix>,v1=<hex>`.")
    tolerance: Duration = Field(
        "300s", description="How far `t` may be from the gateway's clock, both ways; each delivery is accepted once "
        "within it.",
    )


class AuthConfig(_Model):
    api_key: ApiKeyAuthConfig | None = Field(None, description="Accept API keys.")
    jwt: JwtAuthConfig | None = Field(None, description="Accept JWT bearer tokens.")
    introspection: IntrospectionAuthConfig | None = Field(
        None, description="Accept opaque bearer tokens, checked at the issuer's introspection endpoint (RFC 7662). "
        "With `jwt` too, JWT-shaped tokens are verified locally and the others introspected.",
    )
    jwt_assertion: JwtAssertionAuthConfig | None = Field(
        None, description="Accept an identity a trusted proxy or mesh asserts as a JWT in a header.",
    )
    signature: SignatureAuthConfig | None = Field(
        None, description="Accept signed requests (RFC 9421 HTTP Message Signatures, RFC 9530 Content-Digest) "
        "by per-consumer signing keys; the route's body is always buffered and checked before forwarding.",
    )
    webhook_signature: WebhookSignatureAuthConfig | None = Field(
        None, description="Accept webhooks signed in the common `t=<unix>,v1=<hex HMAC-SHA256 of \"t.body\">` "
        "scheme (Stripe's shape) with a shared secret from the vault; the body is always buffered.",
    )
    mtls: MtlsAuthConfig | None = Field(None, description="Accept a verified client certificate (mutual TLS).")
    require: Literal["any", "all"] = Field(
        "any", description="`any`: one of the methods authenticates the request. `all` (with `mtls` and one other "
        "method): the key or token AND the client certificate, both naming the same consumer; scopes and roles "
        "come from the key or token, the certificate binds it to its holder.",
    )

    @model_validator(mode="after")
    def _at_least_one(self) -> AuthConfig:
        if (self.api_key is None and self.jwt is None and self.mtls is None and self.signature is None
                and self.webhook_signature is None and self.introspection is None and self.jwt_assertion is None):
            raise ValueError("name at least one method (api_key, jwt, mtls, signature, webhook_signature, "
                             "introspection, jwt_assertion), or write `auth: none` for a public route")
        if self.require == "all" and (self.mtls is None or (self.api_key is None) == (self.jwt is None)):
            raise ValueError("`require: all` combines `mtls` with exactly one of api_key or jwt")
        return self


class SigningKeysConfig(_Model):
    cache_ttl: Duration = Field(
        "5s", description="How long a signing-key lookup (and a webhook secret read from the vault) is cached. A "
        "revocation clears it at once on this instance and, with `shared_state`, on every instance.",
    )


class AttributeRule(_Model):
    param: str = Field(description="Path parameter from the route template, e.g. `user_id`.")
    claim: str = Field(
        "sub", description="Principal attribute it must equal: a JWT claim, or `consumer_id`."
    )


class ExpressionRule(_Model):
    name: str = Field(description="Names the rule in the audit trail (`forbidden:rule:<name>`); never shown to "
                      "the caller.")
    when: str = Field(
        description="A CEL expression that must be true, over `request` (method, path, host, scheme, and the "
        "`headers` and `query` this section lists), `params`, `principal` (id, sub, method, scopes, roles, claims, "
        "key_id, issuer), `context` (client_ip, route), `now` (a timestamp), `body` (the parsed JSON body, on a "
        "route that validates one) and `ip_in(address, cidr)`. Type-checked at load; anything but true refuses "
        "(403), an evaluation error or a spent budget included.",
    )
    _name = field_validator("name")(lambda cls, v: _check_name(v))

    @field_validator("when")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            compile_expression(value)
        except ExpressionError as exc:
            raise ValueError(f"not a valid rule: {exc}") from None
        return value


def _rule_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "expression" if "when" in value or "name" in value else "attribute"
    return "expression" if isinstance(value, ExpressionRule) else "attribute"


# One rule, by its shape: `when` (or `name`) makes it an expression rule, so an error names one kind.
Rule = Annotated[Annotated[AttributeRule, Tag("attribute")] | Annotated[ExpressionRule, Tag("expression")],
                 Discriminator(_rule_kind)]


class AuthorizeConfig(_Model):
    scopes_all: list[str] = Field(default_factory=list, description="Every one of these scopes is needed.")
    scopes_any: list[str] = Field(default_factory=list, description="At least one of these scopes is needed.")
    roles_any: list[str] = Field(default_factory=list, description="At least one of these roles is needed.")
    acr_values: list[str] = Field(
        default_factory=list, description="Step-up: the token's `acr` must be one of these; otherwise 401 with "
        "`WWW-Authenticate: Bearer error=\"insufficient_user_authentication\"` (RFC 9470).",
    )
    amr_any: list[str] = Field(
        default_factory=list, description="Step-up: the token's `amr` list must hold one of these (e.g. mfa, otp, "
        "hwk); otherwise 401 as for `acr_values`.",
    )
    max_auth_age: Duration | None = Field(
        None, description="Step-up: the token's `auth_time` must be at most this old (a recent login); otherwise "
        "401 as for `acr_values`, with `max_age` in the challenge.",
    )
    rules: list[Rule] = Field(
        default_factory=list, description="Every rule must hold: `{param, claim}` (a path parameter equals a "
        "principal attribute) or `{name, when}` (a CEL expression; see README, Authorization rules).",
    )
    headers: list[HeaderName] = Field(
        default_factory=list, max_length=32, description="Request headers the rules may read as "
        "`request.headers[\"name\"]` (lower-case). A listed header sent twice refuses the request (403): a rule "
        "must not read one copy while the backend reads another.",
    )
    query: list[str] = Field(
        default_factory=list, max_length=32, description="Query parameters the rules may read as "
        "`request.query[\"name\"]`; sent twice, the request is refused as for headers.",
    )


class RateLimitConfig(_Model):
    name: str = Field(description="Name shown in RateLimit-Policy, audit reasons and metrics.")
    key: Literal["consumer", "ip", "route", "global"] = Field(
        description="What is counted: per consumer, per client IP, per route, or one global count."
    )
    rates: list[Rate] = Field(
        min_length=1, description="Windows, all enforced at once: e.g. ['10/second', '500/minute', '10000/day']."
    )
    burst: int | None = Field(
        None, ge=1, description="Extra capacity of the shortest window (token bucket depth). Default: its limit."
    )
    on_store_failure: Literal["open", "closed"] | None = Field(
        None, description="When the shared state (Redis) is down: open = admit this instance's share of the "
        "limit, closed = refuse (429). Default: shared_state.on_failure.",
    )

    _name = field_validator("name")(_check_name)


class ShieldRouteConfig(_Model):
    allow: list[Cidr] = Field(default_factory=list, description="If set, only these client networks pass.")
    deny: list[Cidr] = Field(default_factory=list, description="These client networks are refused (deny wins).")


class ShieldConfig(ShieldRouteConfig):
    unauthenticated_rate: Rate | None = Field(
        "60/minute",
        description="Per client IP: requests to protected routes that carry no credential. Checked before auth.",
    )
    failed_auth_rate: Rate | None = Field(
        "20/minute",
        description="Per client IP: failed authentications. Once spent, the IP gets 429 before any key lookup.",
    )


class JsonBodyConfig(_Model):
    max_depth: int = Field(32, ge=1, le=512, description="Deepest nesting of objects and arrays.")
    max_keys: int = Field(1000, ge=1, description="Most object keys in the whole document.")
    forbidden_keys: list[str] = Field(
        default_factory=lambda: ["__proto__", "constructor", "prototype"],
        description="Keys refused anywhere in the document (prototype pollution).",
    )


_STREAMED_JSON = ("body_buffering: a streamed body cannot be validated as JSON before it is forwarded "
                  "(drop `json` or buffer the body)")


class RequestConfig(_Model):
    max_body_bytes: ByteSize | None = Field(
        None, description="Largest body; Content-Length is checked first, streamed bodies are counted."
    )
    content_types: list[str] = Field(
        default_factory=list, description="If set, bodies must have one of these media types."
    )
    json_body: JsonBodyConfig | None = Field(
        None, alias="json", description="Validate the body as JSON (also requires application/json)."
    )
    body_buffering: Literal["buffered", "streamed"] | None = Field(
        None,
        description="`buffered` (the default): the whole body is read and checked (framing, `max_body_bytes`, "
        "body timeouts) before the upstream is contacted. `streamed`: the request is forwarded once its head is "
        "checked and the body follows as it arrives (large uploads), still bounded by the same limit and "
        "timeouts; but a malformed chunk, a body over the limit or a stalled upload is then found mid-stream and "
        "the upstream sees a cut request. Cannot be combined with `json` (it needs the whole body first). Our "
        "own server only (`listen.server: portcullis`).",
    )
    remove_headers: list[HeaderPattern] = Field(
        default_factory=list,
        description="Client request headers removed before forwarding, besides the default list (URL- and "
        "method-override headers, forwarding hints the gateway does not set, other gateways' identity headers; "
        "see the README). Names match case-insensitively and with `_` read as `-`; a final `*` is a prefix "
        "(`x-envoy-*`). A route's list adds to the global one.",
    )
    reject_headers: list[HeaderPattern] = Field(
        default_factory=list,
        description="A request carrying any of these (matched like `remove_headers`) is refused with 400 "
        "`request.malformed` and never forwarded; the audit reason names the header's family. A route's list adds "
        "to the global one. Naming a header the gateway sets (`x-consumer-id`) refuses its client-sent copies and "
        "their `_` variants instead of removing them.",
    )
    keep_headers: list[HeaderPattern] = Field(
        default_factory=list,
        description="Forward these although the default list removes them (globally), or although the default "
        "list or the global `remove_headers` / `reject_headers` would remove or refuse them (on a route). Never "
        "lifts the gateway's own headers (X-Consumer-Id, X-Forwarded-For, …) or hop-by-hop ones.",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, populate_by_name=True)

    @model_validator(mode="after")
    def _header_lists(self) -> RequestConfig:
        if self.body_buffering == "streamed" and self.json_body is not None:
            raise ValueError(_STREAMED_JSON)
        for field_name in ("remove_headers", "reject_headers", "keep_headers"):
            for name in getattr(self, field_name):
                if any(pattern_covers(name, f.decode()) for f in FRAMING_HEADERS):
                    raise ValueError(f"{field_name}: {name!r} covers a framing header (Host, Content-Length, "
                                     "Transfer-Encoding), which the gateway checks itself")
        for name in self.keep_headers:
            if not name.endswith("*") and name.encode() in GATEWAY_SET_HEADERS | HOP_BY_HOP:
                raise ValueError(f"keep_headers: {name!r} is set by the gateway or hop-by-hop; a client's copy "
                                 "is always removed")
            for field_name in ("remove_headers", "reject_headers"):
                if any(pattern_covers(name, other) or pattern_covers(other, name)
                       for other in getattr(self, field_name)):
                    raise ValueError(f"keep_headers: {name!r} is also in {field_name} here")
        return self


class CorsConfig(_Model):
    allow_origins: list[str] = Field(min_length=1, description="Exact origins, or ['*'] without credentials.")
    allow_methods: list[HttpMethod] = Field(
        default_factory=lambda: ["GET", "POST"], description="Methods a preflight may ask for."
    )
    allow_headers: list[HeaderName] = Field(default_factory=list, description="Request headers allowed.")
    expose_headers: list[HeaderName] = Field(default_factory=list, description="Response headers exposed.")
    allow_credentials: bool = Field(False, description="Send Access-Control-Allow-Credentials: true.")
    max_age: Duration = Field("10m", description="How long browsers may cache a preflight answer.")

    @model_validator(mode="after")
    def _no_credentialed_wildcard(self) -> CorsConfig:
        if "*" in self.allow_origins:
            if self.allow_credentials:
                raise ValueError("a credentialed CORS policy cannot allow origin '*'")
            if len(self.allow_origins) > 1:
                raise ValueError("'*' cannot be combined with other origins")
        for origin in self.allow_origins:
            if origin == "*":
                continue
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or origin.endswith("/"):
                raise ValueError(f"origin {origin!r} must be scheme://host[:port] with no path")
        return self


class SecurityHeadersConfig(_Model):
    hsts_max_age: Duration = Field("365d", description="HSTS max-age, sent only when serving over TLS.")
    hsts_include_subdomains: bool = Field(True, description="Add includeSubDomains to HSTS.")
    frame_options: Literal["DENY", "SAMEORIGIN"] = Field("DENY", description="X-Frame-Options.")
    content_security_policy: str | None = Field(
        "frame-ancestors 'none'", description="Content-Security-Policy, unless the upstream set one."
    )
    referrer_policy: str = Field("no-referrer", description="Referrer-Policy.")
    remove_headers: list[HeaderName] = Field(
        default_factory=lambda: ["server", "x-powered-by", "x-aspnet-version", "x-aspnetmvc-version"],
        description="Upstream headers that reveal internals and are removed.",
    )


class AuditRetentionConfig(_Model):
    request: Duration = Field("90d", gt=0, description="How long request records are kept in the store.")
    security: Duration = Field("365d", gt=0, description="How long security events are kept in the store.")
    compliance: Duration = Field("2557d", gt=0, description="How long compliance records are kept (7 years).")
    debug: Duration = Field("7d", gt=0, description="How long debug records are kept in the store.")
    run_every: Duration = Field(
        "10m", gt=0, description="How often the running gateway removes expired records (0 rows when none)."
    )
    batch_rows: int = Field(1000, ge=1, description="Most rows one DELETE statement removes.")
    max_rows_per_run: int = Field(
        100_000, ge=1, description="Most records one periodic run removes; the rest waits for the next run."
    )
    enabled: bool = Field(True, description="Remove expired records from the store in the running gateway.")

    def keep_s(self, record_class: str) -> float | None:
        """How long ``record_class`` is kept, or None for a class with no retention (never expired)."""
        value = getattr(self, record_class, None) if record_class in _RETENTION_CLASSES else None
        return float(value) if value is not None else None


_RETENTION_CLASSES = ("request", "security", "compliance", "debug")


class SiemTlsConfig(_Model):
    ca_file: str = Field(description="PEM CA bundle the SIEM's server certificate must chain to (RFC 5425: the"
                         " certificate is always verified, and its name checked).")
    cert_file: str | None = Field(None, description="PEM client certificate, when the SIEM asks for one.")
    key_file: str | None = Field(None, description="PEM private key of `cert_file`.")
    server_name: str | None = Field(
        None, description="Name the server certificate must carry (and SNI); default: `host`.",
    )

    @model_validator(mode="after")
    def _key_with_cert(self) -> SiemTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both cert_file and key_file")
        return self


_PRINTABLE_ASCII = re.compile(r"[!-~]{1,48}")


class SyslogSiemConfig(_Model):
    type: Literal["syslog"] = Field(description="Syslog over TCP: RFC 5424 messages, RFC 6587 octet counting.")
    name: str = Field(description="Names the sink in logs, metrics and its spill file.")
    host: str = Field(description="The syslog receiver's host name or address.")
    port: int = Field(ge=1, le=65535, description="The receiver's TCP port (6514 is syslog over TLS).")
    tls: SiemTlsConfig | None = Field(None, description="RFC 5425 TLS; required unless `allow_plaintext`.")
    allow_plaintext: bool = Field(
        False, description="Send over plain TCP without TLS (records cross the network readable).",
    )
    format: Literal["ocsf", "native"] = Field(
        "ocsf", description="Message body: `ocsf` (one OCSF event a message) or `native` (the sealed audit record, "
        "checkpoints included).",
    )
    app_name: str = Field("portcullis", description="RFC 5424 APP-NAME (1-48 printable ASCII characters).")
    facility: int = Field(13, ge=0, le=23, description="RFC 5424 facility (13: log audit).")
    connect_timeout: Duration = Field("5s", description="Longest a connection (and TLS handshake) may take.")
    write_timeout: Duration = Field(
        "10s", description="Longest the receiver may take to accept one batch; then the connection is dropped and the"
        " batch waits in the spill file.",
    )

    _name = field_validator("name")(_check_name)

    @field_validator("app_name")
    @classmethod
    def _app_name(cls, value: str) -> str:
        if not _PRINTABLE_ASCII.fullmatch(value):
            raise ValueError("APP-NAME is 1-48 printable ASCII characters without spaces")
        return value

    @model_validator(mode="after")
    def _tls_or_plaintext(self) -> SyslogSiemConfig:
        if self.tls is None and not self.allow_plaintext:
            raise ValueError("set `tls` (RFC 5425), or `allow_plaintext: true` to send records unencrypted")
        return self


class HttpSiemConfig(_Model):
    type: Literal["http"] = Field(description="POST batches as a JSON array to a URL.")
    name: str = Field(description="Names the sink in logs, metrics and its spill file.")
    url: str = Field(description="https:// URL the batches are posted to (http:// only with `allow_http`).")
    allow_http: bool = Field(False, description="Accept a plain http:// URL (records cross the network readable).")
    format: Literal["ocsf", "native"] = Field(
        "ocsf", description="Array items: `ocsf` (OCSF events) or `native` (the sealed audit records, checkpoints"
        " included).",
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Headers sent with every batch (e.g. `authorization: Bearer "
        "{secret:siem-token}`); `{secret:NAME}` is filled from the vault at start, `${ENV}` at load.",
    )
    ca_file: str | None = Field(None, description="PEM CA bundle for the server certificate; default: the system's.")
    connect_timeout: Duration = Field("5s", description="Longest a connection (and TLS handshake) may take.")
    timeout: Duration = Field("10s", description="Longest one POST may take, answer included.")

    _name = field_validator("name")(_check_name)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http(s):// URL")
        if parts.username or parts.password or parts.fragment:
            raise ValueError("the URL cannot carry credentials or a fragment (use `headers`)")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, values: dict[str, str]) -> dict[str, str]:
        out = {}
        for name, value in values.items():
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name) or any(c in value for c in "\r\n\0"):
                raise ValueError(f"{name!r}: not a valid header")
            if "{secret:" in SECRET_REFERENCE.sub("", value):
                raise ValueError(f"{name}: secret references are {{secret:name}} with a-z 0-9 _ . -")
            out[name.lower()] = value
        return out

    @model_validator(mode="after")
    def _https(self) -> HttpSiemConfig:
        if urlsplit(self.url).scheme == "http" and not self.allow_http:
            raise ValueError("the SIEM URL is https://, or set `allow_http: true` to send records unencrypted")
        return self


SiemConfig = Annotated[SyslogSiemConfig | HttpSiemConfig, Field(discriminator="type")]


class AuditConfig(_Model):
    file: str | None = Field("audit.jsonl", description="Rotating JSONL audit file; null to disable.")
    max_file_bytes: ByteSize = Field("100MiB", description="Rotate the file at this size.")
    backup_count: int = Field(5, ge=0, description="Rotated files kept.")
    to_store: bool = Field(True, description="Also write records to the store's audit table.")
    spill_file: str = Field(
        "audit.spill.jsonl",
        description="Prefix of the per-sink spill files (PATH.0, PATH.1): records wait there, not in memory, while a"
        " sink is down or behind, and are replayed in order.",
    )
    batch_size: int = Field(
        256, ge=1, description="Records that wake the writer; a sink that is behind is given up to 8 batches at once."
    )
    flush_interval: Duration = Field("1s", description="Longest time a record waits before being written.")
    queue_max: int = Field(
        100_000, ge=1,
        description="Most records queued in memory for the writer; a record that finds the queue full is counted in"
        " portcullis_audit_lost_records_total.",
    )
    when_full: Literal["shed", "drop"] = Field(
        "shed",
        description="While the queue is full: shed answers new requests 503 service.unavailable (Retry-After: 1)"
        " before anything reaches an upstream, so no request is served without its record (on the front door and"
        " every egress door: the HTTP door, the in-process transport, the proxy's calls and tunnels); drop serves"
        " them and counts their records lost.",
    )
    signing_key: SecretStr | None = Field(
        None,
        description="Key that signs the audit chain's checkpoints; set it from ${ENV}. For hmac-sha256 a secret of at"
        " least 32 characters; for ed25519 a 32-byte private seed in base64 or a PEM private key. Without it"
        " checkpoints are written unsigned and `portcullis audit verify` can check only the hashes.",
    )
    signing_algorithm: Literal["hmac-sha256", "ed25519"] = Field(
        "hmac-sha256",
        description="How checkpoints are signed: hmac-sha256 (whoever verifies can also sign) or ed25519 (verify with"
        " the public key alone, `portcullis audit public-key`).",
    )
    heads_file: str = Field(
        "audit.heads.json",
        description="Where this instance keeps its audit chains' latest attested heads (0600, rewritten at every"
        " checkpoint): the next start's genesis checkpoint names them, and `portcullis audit verify` checks the trail"
        " reaches them. One per instance, like `spill_file`.",
    )
    checkpoint_every: int = Field(
        10_000, ge=1, description="Write a signed checkpoint after this many records of one chain."
    )
    checkpoint_interval: Duration = Field(
        "60s", description="Write a signed checkpoint at least this often while records arrive."
    )
    retention: AuditRetentionConfig = Field(
        default_factory=lambda: AuditRetentionConfig(),
        description="How long the store keeps each record class; expired records are removed in bounded batches.",
    )
    siem: list[SiemConfig] = Field(
        default_factory=list,
        description="SIEMs the records are streamed to (syslog over TCP/TLS, or HTTP POST), each one more sink with"
        " its own spill file: a SIEM that is down or slow holds up neither the gateway nor the other sinks.",
    )

    @model_validator(mode="after")
    def _unique_siem_names(self) -> AuditConfig:
        names = [sink.name for sink in self.siem]
        if len(set(names)) != len(names):
            raise ValueError("siem: every sink needs its own name")
        return self

    @model_validator(mode="after")
    def _usable_signing_key(self) -> AuditConfig:
        if self.signing_key is not None:
            from portcullis.audit.signing import SigningKeyInvalid, make_signer  # the one parser of these keys

            try:
                make_signer(self.signing_algorithm, self.signing_key.get_secret_value())
            except SigningKeyInvalid as exc:
                raise ValueError(f"signing_key: {exc}") from None
        return self


class UpstreamConfig(_Model):
    url: str = Field(description="Base URL: http(s)://host[:port][/prefix]. The route path is appended.")
    connect_timeout: Duration = Field("2s", description="Timeout to open a connection.")
    read_timeout: Duration = Field("30s", description="Timeout between bytes of the response.")
    total_timeout: Duration = Field("60s", description="Timeout for the whole exchange.")
    pool_size: int = Field(100, ge=1, description="Most pooled keep-alive connections to this upstream.")
    idle_timeout: Duration = Field(
        "30s", description="Close a pooled connection idle this long instead of reusing it."
    )
    verify_tls: bool = Field(True, description="Verify the upstream certificate over https.")
    ca_file: str | None = Field(
        None, description="CA bundle for the upstream certificate. When set it replaces the system's CAs: only "
        "these are trusted for this upstream (a pinned CA).",
    )
    client_cert_file: str | None = Field(
        None, description="PEM client certificate (chain) presented to an https upstream (mutual TLS).",
    )
    client_key_file: str | None = Field(
        None, description="PEM private key of `client_cert_file`; refused at load if the group or others may "
        "read it (mode 0600 or stricter).",
    )
    preserve_host: bool = Field(False, description="Send the client's Host instead of the upstream's.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected http(s)://host[:port][/prefix]")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("the upstream URL cannot carry credentials, a query or a fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _client_cert_pair(self) -> UpstreamConfig:
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("client_cert_file and client_key_file go together")
        if self.client_cert_file is not None and not self.url.startswith("https://"):
            raise ValueError("a client certificate needs an https:// upstream")
        return self


class RouteConfig(_Model):
    name: str = Field(description="Route name, used in audit records, metrics and `portcullis explain`.")
    hosts: list[str] = Field(default_factory=list, description="Host names this route serves; empty = any.")
    methods: list[HttpMethod] = Field(default_factory=list, description="Methods allowed; empty = any.")
    path: str = Field(
        description="Path template: literal segments, `{name}` for one segment, a final `{name:path}` for the rest."
    )
    upstream: str = Field(description="Name of an entry in `upstreams`.")
    auth: AuthConfig | Literal["none"] = Field(
        default_factory=lambda: AuthConfig(api_key=ApiKeyAuthConfig()),
        description="Authentication. Omitted means an API key is required; `none` makes the route public.",
    )
    authorize: AuthorizeConfig | None = Field(None, description="Scopes, roles and attribute rules.")
    rate_limits: list[RateLimitConfig] = Field(default_factory=list, description="Limits for this route.")
    shield: ShieldRouteConfig | None = Field(None, description="IP allow/deny for this route.")
    request: RequestConfig = Field(
        default_factory=RequestConfig, description="Request body limits and header rules for this route."
    )
    cors: CorsConfig | None = Field(None, description="CORS for browser callers.")
    forward_identity: bool = Field(
        True, description="Send X-Consumer-Id, X-Consumer-Scopes and X-Key-Id to the upstream."
    )
    prompt_screening: LlmScreeningConfig | None = Field(
        None, description="The route fronts an LLM: screen the prompt in each JSON request body (OpenAI or "
        "Anthropic format) before it is forwarded (`validate.prompt`; docs/egress.md, LLM routes, says what it can and "
        "cannot stop). Refusals are 400 `request.invalid_body`.",
    )

    _name = field_validator("name")(_check_name)

    @field_validator("path")
    @classmethod
    def _template(cls, value: str) -> str:
        if not _PATH_TEMPLATE.match(value) or "//" in value or "/./" in value or "/../" in value:
            raise ValueError("expected a path template like /orders/{order_id} or /files/{rest:path}")
        if ":path}" in value and not value.endswith(":path}"):
            raise ValueError("a {name:path} parameter must be the last segment")
        return value

    @property
    def is_public(self) -> bool:
        return self.auth == "none"

    @model_validator(mode="after")
    def _rules_name_params(self) -> RouteConfig:
        if self.prompt_screening is not None and self.request.body_buffering == "streamed":
            raise ValueError("prompt_screening reads the whole body before forwarding: not with body_buffering: "
                             "streamed")
        params = set(re.findall(r"\{([a-z_][a-z0-9_]*)", self.path))
        if self.authorize:
            for rule in self.authorize.rules:
                if isinstance(rule, AttributeRule) and rule.param not in params:
                    raise ValueError(f"authorize rule names {rule.param!r}, which is not in the path template")
            a = self.authorize
            if self.is_public and (a.scopes_all or a.scopes_any or a.roles_any or a.rules or a.acr_values
                                   or a.amr_any or a.max_auth_age is not None):
                raise ValueError("a public route (auth: none) cannot require scopes, roles, rules or acr/amr")
        return self


def _check_keeps(where: str, keeps: list[str], inherited: list[str]) -> None:
    """A kept name must lift something inherited: otherwise it is a typo that protects nothing."""
    for name in keeps:
        if not any(pattern_covers(p, name) or pattern_covers(name, p) for p in inherited):
            raise ValueError(f"{where}: {name!r} is not removed or refused by the default list or the global "
                             "request section, so there is nothing to keep")


def _check_oidc_methods(where: str, auth: AuthConfig, issuers: list[JwtIssuerConfig]) -> None:
    """The issuers that `introspection` and `jwt_assertion` name exist (and introspect, for the former)."""
    by_name = {i.name: i for i in issuers}
    if auth.introspection is not None:
        issuer = by_name.get(auth.introspection.issuer)
        if issuer is None:
            raise ValueError(f"{where}.auth.introspection.issuer: no issuer named {auth.introspection.issuer!r}")
        if issuer.introspection is None:
            raise ValueError(f"{where}.auth.introspection.issuer: {issuer.name!r} has no `introspection` section")
    if auth.jwt_assertion is not None:
        if not issuers:
            raise ValueError(f"{where}.auth.jwt_assertion: no `jwt_issuers` are configured")
        for name in auth.jwt_assertion.issuers:
            if name not in by_name:
                raise ValueError(f"{where}.auth.jwt_assertion.issuers: no issuer named {name!r}")


class SharedStateConfig(_Model):
    url: str = Field(description="Redis shared by every instance: redis://host:port/db (rediss:// for TLS).")
    key_prefix: str = Field("portcullis:", description="Prefix of every key, so several gateways can share a Redis.")
    on_failure: Literal["open", "closed"] = Field(
        "open", description="Redis down: open = each instance admits its local share; closed = refuse (429)."
    )
    budgets_on_failure: Literal["open", "closed"] = Field(
        "closed", description="Redis down: closed = egress calls that spend a budget are refused (429, budget "
        "shared_state); open = each instance spends from its share of every budget, counted from zero.",
    )
    instances: int = Field(1, ge=1, description="Gateway instances: a limit's local share is limit / instances.")
    timeout: Duration = Field("250ms", description="Longest wait for Redis before a decision falls back.")

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("redis", "rediss"):
            raise ValueError("expected redis://host:port/db or rediss://…")
        return value


class EgressEntryConfig(_Model):
    enabled: bool = Field(True, description="Serve /<prefix>/<route>/<path> on the API listener.")
    path_prefix: str = Field("/egress", description="Where the egress door is mounted.")
    auth: AuthConfig = Field(
        default_factory=lambda: AuthConfig(api_key=ApiKeyAuthConfig()),
        description="How callers authenticate (as on an ingress route; a key by default, never public).",
    )
    authorize: AuthorizeConfig | None = Field(None, description="Scopes or roles a caller needs.")
    rate_limits: list[RateLimitConfig] = Field(default_factory=list, description="Limits on callers of the door.")
    max_body_bytes: ByteSize = Field("1MiB", description="Largest request body a caller may send.")

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"(/[a-z0-9_.-]+)+", value):
            raise ValueError("expected a path like /egress (lowercase segments, no trailing slash)")
        return value


class EgressSection(EgressConfig):
    """The ``egress:`` section: routes and budgets (``config/egress.py``) plus the HTTP door."""

    entry: EgressEntryConfig = Field(
        default_factory=EgressEntryConfig, description="The HTTP door: /egress/<route>/<path>."
    )


class GatewayConfig(_Model):
    version: Literal[1] = Field(1, description="Config format version.")
    listen: ListenConfig = Field(default_factory=ListenConfig, description="The API listener.")
    admin: AdminConfig = Field(default_factory=AdminConfig, description="The admin listener.")
    reload: ReloadConfig = Field(
        default_factory=ReloadConfig, description="How reloads are bounded; a change applies from the next reload."
    )
    trusted_proxies: list[Cidr] = Field(
        default_factory=list,
        description="Peers whose X-Forwarded-For is believed (CIDRs). Empty: only the socket peer counts.",
    )
    xfcc: XfccConfig | None = Field(
        None, description="Trust `X-Forwarded-Client-Cert` from a mesh for routes with `auth.mtls.accept_xfcc`.",
    )
    store: StoreConfig = Field(default_factory=StoreConfig, description="Durable store.")
    tracing: TracingConfig = Field(
        default_factory=TracingConfig, description="OpenTelemetry tracing and W3C `traceparent` handling.",
    )
    log: LogConfig = Field(default_factory=LogConfig, description="The process's log lines (stderr).")
    shared_state: SharedStateConfig | None = Field(
        None, description="Redis shared by every instance: rate limits, budgets, breaker states, revocation and reload "
        "events; none: all in memory, per process."
    )
    keys: KeysConfig | None = Field(None, description="API key hashing; required when any route accepts keys.")
    signing_keys: SigningKeysConfig = Field(
        default_factory=SigningKeysConfig, description="Request-signing keys (routes with `auth.signature`)."
    )
    jwt_issuers: list[JwtIssuerConfig] = Field(default_factory=list, description="Trusted JWT issuers.")
    shield: ShieldConfig = Field(default_factory=ShieldConfig, description="Global IP lists and pre-auth limits.")
    anomaly: AnomalyConfig = Field(
        default_factory=AnomalyConfig, description="Anomaly detection on baselines per route and consumer.",
    )
    controls: ControlsConfig = Field(
        default_factory=ControlsConfig,
        description="Incident controls (blocks and emergency limits, made through the admin API): how they stay "
        "current.",
    )
    rate_limits: list[RateLimitConfig] = Field(
        default_factory=list, description="Limits applied on every route (before the route's own)."
    )
    request: RequestConfig = Field(
        default_factory=lambda: RequestConfig(max_body_bytes=1024 * 1024),
        description="Defaults for every route; a route's `request` overrides the body fields one by one, and its "
        "header lists add to these.",
    )
    security_headers: SecurityHeadersConfig = Field(
        default_factory=SecurityHeadersConfig, description="Response security headers."
    )
    audit: AuditConfig = Field(default_factory=AuditConfig, description="The audit trail.")
    egress: EgressSection | None = Field(
        None, description="Third-party APIs that workflows and agents may call through the gateway."
    )
    upstreams: dict[str, UpstreamConfig] = Field(description="Backends, by name.")
    routes: list[RouteConfig] = Field(min_length=1, description="Routes, matched most specific first.")

    @property
    def stale_if_error_s(self) -> float:
        """How long credentials read from the store stay usable while it is unreachable: API keys,
        admin tokens and vault secrets (``keys.stale_if_error``, or its default without a keys section)."""
        return self.keys.stale_if_error if self.keys is not None else parse_duration(DEFAULT_STALE_IF_ERROR)

    @model_validator(mode="after")
    def _client_certs_on_our_server(self) -> GatewayConfig:
        tls = self.listen.tls
        if tls is not None and tls.client_ca_file is not None and self.listen.server != "portcullis":
            raise ValueError("listen.tls.client_ca_file: client certificates need `listen.server: portcullis` "
                             "(uvicorn does not hand the peer certificate to the app)")
        return self

    @model_validator(mode="after")
    def _references(self) -> GatewayConfig:
        issuers = {i.name for i in self.jwt_issuers}
        if len(issuers) != len(self.jwt_issuers):
            raise ValueError("jwt_issuers: names must be unique")
        if self.admin.operators is not None and self.admin.operators.issuer not in issuers:
            raise ValueError(f"admin.operators.issuer: no jwt_issuers entry named {self.admin.operators.issuer!r}")
        defaults = [p for names in REMOVED_BY_DEFAULT.values() for p in names]
        _check_keeps("request.keep_headers", self.request.keep_headers, defaults)
        inherited = [*defaults, *self.request.remove_headers, *self.request.reject_headers]
        seen: set[str] = set()
        global_limits = {lim.name for lim in self.rate_limits}
        for i, route in enumerate(self.routes):
            where = f"routes[{i}]"
            if route.name in seen:
                raise ValueError(f"{where}.name: {route.name!r} is used by another route")
            seen.add(route.name)
            _check_keeps(f"{where}.request.keep_headers", route.request.keep_headers, inherited)
            streamed = (route.request.body_buffering or self.request.body_buffering) == "streamed"
            if streamed and (route.request.json_body or self.request.json_body) is not None:
                raise ValueError(f"{where}.request.{_STREAMED_JSON}")
            body_rules = [r.name for r in (route.authorize.rules if route.authorize else [])
                          if isinstance(r, ExpressionRule) and compile_expression(r.when).uses_body]
            if body_rules and (route.request.json_body or self.request.json_body) is None:
                raise ValueError(f"{where}.authorize.rules: {body_rules[0]!r} reads `body`, so the route must "
                                 "validate a JSON body (request.json)")
            if streamed and isinstance(route.auth, AuthConfig) and (
                route.auth.signature is not None or route.auth.webhook_signature is not None
            ):
                raise ValueError(f"{where}.request.body_buffering: a signed route's body is checked against its "
                                 "Content-Digest before anything is forwarded, so it cannot be streamed")
            if route.upstream not in self.upstreams:
                raise ValueError(f"{where}.upstream: no upstream named {route.upstream!r}")
            if isinstance(route.auth, AuthConfig):
                if route.auth.api_key is not None and self.keys is None:
                    raise ValueError(f"{where}.auth.api_key: set the top-level `keys.pepper` to use API keys")
                if route.auth.mtls is not None:
                    self._check_mtls(where, route.auth.mtls)
                if route.auth.jwt is not None:
                    if not self.jwt_issuers:
                        raise ValueError(f"{where}.auth.jwt: no `jwt_issuers` are configured")
                    for name in route.auth.jwt.issuers:
                        if name not in issuers:
                            raise ValueError(f"{where}.auth.jwt.issuers: no issuer named {name!r}")
                _check_oidc_methods(where, route.auth, self.jwt_issuers)
            for lim in route.rate_limits:
                if lim.name in global_limits:
                    raise ValueError(f"{where}.rate_limits: {lim.name!r} is also a global limit name")
                if lim.key == "consumer" and route.is_public:
                    raise ValueError(f"{where}.rate_limits: a public route has no consumer to count")
        if self.egress is not None and self.egress.entry.enabled:
            entry = self.egress.entry
            if entry.auth.api_key is not None and self.keys is None:
                raise ValueError("egress.entry.auth.api_key: set the top-level `keys.pepper` to use API keys")
            if entry.auth.jwt is not None and not self.jwt_issuers:
                raise ValueError("egress.entry.auth.jwt: no `jwt_issuers` are configured")
            _check_oidc_methods("egress.entry", entry.auth, self.jwt_issuers)
            if entry.auth.mtls is not None:
                self._check_mtls("egress.entry", entry.auth.mtls)
            if any(r.name == "egress" for r in self.routes):
                raise ValueError("routes: the name 'egress' is the egress door's while egress.entry is enabled")
            if any(r.path == entry.path_prefix or r.path.startswith(entry.path_prefix + "/") for r in self.routes):
                raise ValueError(f"egress.entry.path_prefix: {entry.path_prefix} is also used by an ingress route")
        if self.egress is not None and self.egress.proxy is not None:
            proxy = self.egress.proxy
            if self.keys is None:
                raise ValueError("egress.proxy: callers present API keys; set the top-level `keys.pepper`")
            if (proxy.host, proxy.port) == (self.listen.host, self.listen.port) and proxy.port != 0:
                raise ValueError("egress.proxy.listen: the API listener already uses this address")
            if self.admin.enabled and (proxy.host, proxy.port) == (self.admin.host, self.admin.port) and proxy.port:
                raise ValueError("egress.proxy.listen: the admin listener already uses this address")
        return self

    def _check_mtls(self, where: str, mtls: MtlsAuthConfig) -> None:
        """A route accepting certificates needs a source of verified certificates: the listener's client CA
        (on our server, which hands the peer certificate to the app) or a trusted mesh's header."""
        tls = self.listen.tls
        if mtls.accept_xfcc and self.xfcc is None:
            raise ValueError(f"{where}.auth.mtls.accept_xfcc: set the top-level `xfcc.trusted_peers`")
        if not mtls.accept_xfcc and (tls is None or tls.client_ca_file is None):
            raise ValueError(f"{where}.auth.mtls: set `listen.tls.client_ca_file` (or accept_xfcc from a mesh)")
