"""The whole exception tree of Portcullis, the public error codes, and their fixed public messages.

Why one module: a gateway's error surface is part of its security. Every client-visible error is one
of the codes below with a fixed, generic title (Kong's ``error_handlers``); the detail a developer
needs lives in ``reason`` (audit and server logs only) and never reaches a response body. Keeping
the tree and the table together makes it easy to see that nothing else leaks.

The tree::

    PortcullisError
    ├── ConfigError                 names the YAML path; never echoes a secret value
    │   └── ConfigFileError         the file itself is refused (unreadable, too large, not UTF-8, not
    │                               YAML, a YAML bomb); names the file and line or byte offset
    ├── ClientError (code → 4xx)
    │   ├── MalformedRequest        request.malformed / request.* codes
    │   ├── PayloadTooLarge         request.too_large
    │   ├── Unauthenticated         auth.missing_credentials | auth.invalid_credentials
    │   ├── Forbidden               authz.forbidden
    │   ├── Blocked                 access.blocked: an incident block matched (block_id for the audit only)
    │   ├── RetryLater              a refusal with retry_after_s (Retry-After): the next four below
    │   ├── RateLimited             limit.exceeded (retry_after_s)
    │   ├── EgressDenied            egress.destination_denied
    │   ├── RunModeDenied           egress.run_mode_denied: the route does not take the call's run mode
    │   ├── BudgetExhausted         budget.exhausted
    │   ├── ExecutionExpired        budget.execution_expired: the execution outlived its maximum lifetime
    │   ├── AuditBackpressure       service.unavailable (503, Retry-After 1): an egress call while the audit
    │   │                           queue is full and audit.when_full is shed (decision shed:audit_queue_full)
    │   └── DependencyUnavailable   service.unavailable (503): a store an egress call needs cannot be read
    │                               (its vault secret, any store); refused before sending, so never counted
    │                               as the provider's failure
    ├── UpstreamError (→ 502/503/504)
    │   ├── UpstreamTimeout
    │   ├── UpstreamUnavailable
    │   ├── UpstreamProtocolError
    │   ├── CircuitOpen
    │   └── Shed                    egress.shed: the endpoint's bulkhead is full (retry_after_s); not a
    │                               provider failure, so never counted by the breaker
    ├── StoreError
    │   └── StoreUnavailable        store.unavailable (admin API); the data path denies or serves cached
    │       └── IdentityProviderUnavailable   an OpenID provider (introspection) did not answer usably: 503
    │       ├── SchemaNotCurrent    PostgreSQL below this version: run `portcullis db upgrade`
    │       └── SchemaTooNew        migrated by a newer Portcullis
    ├── VaultError
    │   ├── VaultLocked             secrets exist but the master key is missing or wrong
    │   └── SecretNotFound
    ├── InvalidControl              an incident control (block, emergency limit) that cannot be made
    │                               (also a ValueError): names the field, never a secret
    └── AuditError                  (also ValueError: both are bad input)
        ├── CursorInvalid           an audit search cursor the store did not hand out
        └── SigningKeyInvalid       audit.signing_key cannot be used with its algorithm; never holds the key

What this module refuses to do: carry exception text to clients. ``str(exc)`` is for logs.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "PUBLIC_ERRORS",
    "STORE_RETRY_AFTER_S",
    "AuditBackpressure",
    "AuditError",
    "Blocked",
    "BudgetExhausted",
    "CircuitOpen",
    "ClientError",
    "ConfigError",
    "ConfigFileError",
    "CursorInvalid",
    "DependencyUnavailable",
    "EgressDenied",
    "ErrorCode",
    "ExecutionExpired",
    "Forbidden",
    "IdentityProviderUnavailable",
    "InvalidControl",
    "MalformedRequest",
    "PayloadTooLarge",
    "PortcullisError",
    "RateLimited",
    "RetryLater",
    "RunModeDenied",
    "SecretNotFound",
    "Shed",
    "SigningKeyInvalid",
    "StoreError",
    "StoreUnavailable",
    "Unauthenticated",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "VaultError",
    "VaultLocked",
    "retry_after_of",
]


class ErrorCode(StrEnum):
    """Every error code a client can see. The form is ``area.condition``."""

    REQUEST_MALFORMED = "request.malformed"
    REQUEST_TARGET_INVALID = "request.target_invalid"
    REQUEST_HEADERS_TOO_LARGE = "request.headers_too_large"
    REQUEST_TARGET_TOO_LONG = "request.target_too_long"
    REQUEST_TIMEOUT = "request.timeout"
    REQUEST_TOO_LARGE = "request.too_large"
    REQUEST_EXPECTATION_FAILED = "request.expectation_failed"
    REQUEST_UNSUPPORTED_MEDIA_TYPE = "request.unsupported_media_type"
    REQUEST_INVALID_BODY = "request.invalid_body"
    ROUTE_NOT_FOUND = "route.not_found"
    METHOD_NOT_ALLOWED = "route.method_not_allowed"
    ACCESS_DENIED = "access.denied"
    ACCESS_BLOCKED = "access.blocked"
    AUTH_MISSING_CREDENTIALS = "auth.missing_credentials"
    AUTH_INVALID_CREDENTIALS = "auth.invalid_credentials"
    AUTH_INSUFFICIENT_USER_AUTHENTICATION = "auth.insufficient_user_authentication"
    PROXY_MISSING_CREDENTIALS = "proxy.missing_credentials"
    PROXY_INVALID_CREDENTIALS = "proxy.invalid_credentials"
    AUTHZ_FORBIDDEN = "authz.forbidden"
    CORS_FORBIDDEN = "cors.forbidden"
    LIMIT_EXCEEDED = "limit.exceeded"
    EGRESS_DESTINATION_DENIED = "egress.destination_denied"
    BUDGET_EXHAUSTED = "budget.exhausted"
    EGRESS_RUN_MODE_DENIED = "egress.run_mode_denied"
    EXECUTION_EXPIRED = "budget.execution_expired"
    EGRESS_SHED = "egress.shed"
    UPSTREAM_UNAVAILABLE = "upstream.unavailable"
    UPSTREAM_TIMEOUT = "upstream.timeout"
    UPSTREAM_PROTOCOL = "upstream.protocol_error"
    CIRCUIT_OPEN = "upstream.circuit_open"
    SERVICE_UNAVAILABLE = "service.unavailable"
    STORE_UNAVAILABLE = "store.unavailable"
    ADMIN_NOT_FOUND = "admin.not_found"
    ADMIN_CONFLICT = "admin.conflict"
    ADMIN_CONFIG_REJECTED = "admin.config_rejected"
    ADMIN_RELOAD_BUSY = "admin.reload_busy"
    ADMIN_HOST_REFUSED = "admin.host_refused"
    ADMIN_ORIGIN_REFUSED = "admin.origin_refused"
    INTERNAL = "internal"


# status, fixed public title. The only text a client ever reads about an error.
PUBLIC_ERRORS: dict[ErrorCode, tuple[int, str]] = {
    ErrorCode.REQUEST_MALFORMED: (400, "Malformed request."),
    ErrorCode.REQUEST_TARGET_INVALID: (400, "Invalid request target."),
    ErrorCode.REQUEST_HEADERS_TOO_LARGE: (431, "Request headers too large."),
    ErrorCode.REQUEST_TARGET_TOO_LONG: (414, "Request target too long."),
    ErrorCode.REQUEST_TIMEOUT: (408, "Request timed out."),
    ErrorCode.REQUEST_TOO_LARGE: (413, "Request body too large."),
    ErrorCode.REQUEST_EXPECTATION_FAILED: (417, "Expectation not supported."),
    ErrorCode.REQUEST_UNSUPPORTED_MEDIA_TYPE: (415, "Unsupported media type."),
    ErrorCode.REQUEST_INVALID_BODY: (400, "Invalid request body."),
    ErrorCode.ROUTE_NOT_FOUND: (404, "Not found."),
    ErrorCode.METHOD_NOT_ALLOWED: (405, "Method not allowed."),
    ErrorCode.ACCESS_DENIED: (403, "Access denied."),
    ErrorCode.ACCESS_BLOCKED: (403, "Access blocked."),
    ErrorCode.AUTH_MISSING_CREDENTIALS: (401, "Missing credentials."),
    ErrorCode.AUTH_INVALID_CREDENTIALS: (401, "Invalid credentials."),
    # RFC 9470: the token is valid but its authentication (acr/amr) is too weak for this route.
    ErrorCode.AUTH_INSUFFICIENT_USER_AUTHENTICATION: (401, "Stronger authentication required."),
    # RFC 9110 section 15.5.8: the proxy door's own authentication (Proxy-Authorization), kept
    # apart from 401 so a client never mistakes the gateway's challenge for the destination's.
    ErrorCode.PROXY_MISSING_CREDENTIALS: (407, "Proxy authentication required."),
    ErrorCode.PROXY_INVALID_CREDENTIALS: (407, "Invalid proxy credentials."),
    ErrorCode.AUTHZ_FORBIDDEN: (403, "Forbidden."),
    ErrorCode.CORS_FORBIDDEN: (403, "Origin not allowed."),
    ErrorCode.LIMIT_EXCEEDED: (429, "Too many requests."),
    ErrorCode.EGRESS_DESTINATION_DENIED: (403, "Destination not allowed."),
    ErrorCode.BUDGET_EXHAUSTED: (429, "Budget exhausted."),
    ErrorCode.EGRESS_RUN_MODE_DENIED: (403, "Run mode not allowed for this route."),
    # 403, not 429: waiting does not help an execution past its lifetime, and SDKs retry a 429.
    ErrorCode.EXECUTION_EXPIRED: (403, "Execution lifetime exceeded."),
    ErrorCode.EGRESS_SHED: (503, "Endpoint busy; retry later."),
    ErrorCode.UPSTREAM_UNAVAILABLE: (502, "Upstream unavailable."),
    ErrorCode.UPSTREAM_TIMEOUT: (504, "Upstream timed out."),
    ErrorCode.UPSTREAM_PROTOCOL: (502, "Upstream protocol error."),
    ErrorCode.CIRCUIT_OPEN: (503, "Upstream temporarily unavailable."),
    ErrorCode.SERVICE_UNAVAILABLE: (503, "Service unavailable."),
    ErrorCode.STORE_UNAVAILABLE: (503, "Store unavailable."),
    ErrorCode.ADMIN_NOT_FOUND: (404, "Not found."),
    ErrorCode.ADMIN_CONFLICT: (409, "Not possible in this configuration."),
    ErrorCode.ADMIN_CONFIG_REJECTED: (422, "Config rejected; nothing changed."),
    ErrorCode.ADMIN_RELOAD_BUSY: (429, "Reload busy; retry later."),
    ErrorCode.ADMIN_HOST_REFUSED: (421, "Misdirected request."),
    ErrorCode.ADMIN_ORIGIN_REFUSED: (403, "Cross-origin request refused."),
    ErrorCode.INTERNAL: (500, "Internal error."),
}


class PortcullisError(Exception):
    """Root of every exception Portcullis raises on purpose."""


class ConfigError(PortcullisError):
    """The configuration is invalid. ``path`` names where (``routes[2].auth.jwt``)."""

    def __init__(self, message: str, *, path: str = "") -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class ConfigFileError(ConfigError):
    """The config file is refused before its content is validated: one line, ``path`` names the file
    and, where known, the line and column or the byte offset."""


class ClientError(PortcullisError):
    """The client's request is refused. ``reason`` is for the audit, never for the response."""

    code: ErrorCode = ErrorCode.REQUEST_MALFORMED

    def __init__(self, reason: str, *, code: ErrorCode | None = None) -> None:
        if code is not None:
            self.code = code
        self.reason = reason
        super().__init__(reason)


class MalformedRequest(ClientError):
    code = ErrorCode.REQUEST_MALFORMED


class PayloadTooLarge(ClientError):
    code = ErrorCode.REQUEST_TOO_LARGE


class Unauthenticated(ClientError):
    """Credentials are missing or invalid. One opaque code for every invalid case (no oracles)."""

    code = ErrorCode.AUTH_INVALID_CREDENTIALS


class Forbidden(ClientError):
    code = ErrorCode.AUTHZ_FORBIDDEN


class Blocked(ClientError):
    """An incident block matched the caller, its key, address, workflow, user or execution.

    ``reason`` is ``blocked:<block id>`` (the audit decision); the block's own reason, written by the
    operator, is never told to the client, nor which subject matched."""

    code = ErrorCode.ACCESS_BLOCKED

    def __init__(self, block_id: str) -> None:
        self.block_id = block_id
        super().__init__(f"blocked:{block_id}")


class RetryLater(ClientError):
    """A refusal that can say when to ask again: ``retry_after_s`` (the answer's Retry-After), or
    ``None`` when waiting alone will not help."""

    def __init__(self, reason: str, *, retry_after_s: float | None = None) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(reason)


class RateLimited(RetryLater):
    code = ErrorCode.LIMIT_EXCEEDED


class EgressDenied(ClientError):
    code = ErrorCode.EGRESS_DESTINATION_DENIED


class BudgetExhausted(RetryLater):
    """``reason`` is ``budget:<name>``; unlike other reasons, the budget's name is told to the caller.
    ``retry_after_s``: until the budget can admit again (its window's reset, or a second while its
    counters are unreachable); ``None`` for a total that never resets on its own."""

    code = ErrorCode.BUDGET_EXHAUSTED

    @property
    def detail(self) -> str:
        name = self.reason.removeprefix("budget:")
        if name == "shared_state":  # the counters are unreachable and budgets fail closed
            return "Budgets cannot be checked right now; retry shortly."
        return f"Exhausted: {name}."


class RunModeDenied(ClientError):
    """The call's run mode is not one the route takes: ``test_run`` on a route not marked for tests,
    ``full_run`` without the route's required scope, role or rule. ``reason`` names which."""

    code = ErrorCode.EGRESS_RUN_MODE_DENIED


class ExecutionExpired(ClientError):
    """The execution's first call was longer ago than ``egress.budgets.execution_max_lifetime``."""

    code = ErrorCode.EXECUTION_EXPIRED


class AuditBackpressure(RetryLater):
    """The audit queue is full and ``audit.when_full`` is ``shed``: nothing is served that cannot be
    audited, on every egress door as on the front door (the same decision, ``shed:audit_queue_full``)."""

    code = ErrorCode.SERVICE_UNAVAILABLE

    def __init__(self) -> None:
        super().__init__("shed:audit_queue_full", retry_after_s=1.0)


class DependencyUnavailable(RetryLater):
    """Something an egress call needs cannot be had from the gateway's own stores: the route's
    credential (the store is unreachable and the secret was not read within ``keys.stale_if_error``:
    ``credential_unavailable:<secret>``; or the secret is gone or cannot be decrypted:
    ``credential_missing:<secret>``), or any other store that failed (``store_unavailable``).
    ``retry_after_s`` says when to retry, ``None`` when an operator must act. Not the caller's fault
    and not the provider's: a 503, and no breaker counts it."""

    code = ErrorCode.SERVICE_UNAVAILABLE


class UpstreamError(PortcullisError):
    """The upstream failed; maps to 502/503/504. ``reason`` is for logs and audit, never the response."""

    code: ErrorCode = ErrorCode.UPSTREAM_UNAVAILABLE

    def __init__(self, reason: str = "upstream_error") -> None:
        self.reason = reason
        super().__init__(reason)


class UpstreamTimeout(UpstreamError):
    code = ErrorCode.UPSTREAM_TIMEOUT


class UpstreamUnavailable(UpstreamError):
    code = ErrorCode.UPSTREAM_UNAVAILABLE


class UpstreamProtocolError(UpstreamError):
    code = ErrorCode.UPSTREAM_PROTOCOL


class CircuitOpen(UpstreamError):
    """The endpoint's breaker is open: fail fast (503) and say when to retry."""

    code = ErrorCode.CIRCUIT_OPEN

    def __init__(self, reason: str = "circuit_open", *, retry_after_s: float = 0.0) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class Shed(UpstreamError):
    """The endpoint's bulkhead refused the call: its queue was full (a newcomer of a higher class took
    the place, or none was lower) or the wait outlasted the queue timeout. 503 with ``Retry-After``."""

    code = ErrorCode.EGRESS_SHED

    def __init__(self, reason: str = "shed", *, retry_after_s: float = 1.0) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class StoreError(PortcullisError):
    """A state backend failed."""


class StoreUnavailable(StoreError):
    """The store cannot be reached. Never shown to a client as such."""


STORE_RETRY_AFTER_S = 5  # a 503 because the durable store is unreachable: when to try again


def retry_after_of(exc: PortcullisError) -> float | None:
    """When a refusal or failure tells its caller to ask again (its Retry-After), if it does: one
    answer for every door that renders one."""
    return exc.retry_after_s if isinstance(exc, RetryLater | CircuitOpen | Shed) else None


class IdentityProviderUnavailable(StoreUnavailable):
    """An identity provider's introspection endpoint timed out, failed or answered unusably. A kind of
    ``StoreUnavailable`` because it is handled as one: authentication denies with 503, never fails open,
    and the failed-auth shield gives the caller's reservation back (our outage, not their failure)."""


class VaultError(PortcullisError):
    """The credential vault failed. Messages name secrets, never their values."""


class VaultLocked(VaultError):
    """Secrets exist but ``PORTCULLIS_SECRET_KEY`` is missing or cannot decrypt them."""


class SecretNotFound(VaultError):
    """No secret by that name."""


class InvalidControl(PortcullisError, ValueError):
    """An incident control that cannot be made: an unknown kind, a malformed address, a factor out of
    range. The message names the field and the rule."""


class AuditError(PortcullisError):
    """The audit trail was asked something it cannot answer."""


class CursorInvalid(AuditError, ValueError):
    """A search cursor that this store did not hand out (or that was altered)."""


class SigningKeyInvalid(AuditError, ValueError):
    """The configured audit signing key cannot be used with its algorithm (the message never holds the key)."""
