"""Response security headers, and removal of headers that describe the upstream's internals.

Why at the gateway: every backend forgetting ``nosniff`` or sending ``Server: Apache/2.4.1`` is a
finding in every pentest report (OWASP Secure Headers Project; OWASP API8 security
misconfiguration). Set once here, they reach every response, the gateway's own 401, 429 and 502
included (the chain runs response policies for local rejections too).

What is replaced and what is kept:

* ``X-Content-Type-Options``, ``X-Frame-Options`` and ``Referrer-Policy`` are the gateway's: an
  upstream copy is replaced, so a response never carries two conflicting values.
* ``Content-Security-Policy`` is added only when the upstream set none: a page-serving upstream
  knows its own policy better.
* ``Strict-Transport-Security`` is sent only when the gateway terminates TLS (RFC 6797 section
  7.2: never over plain HTTP); the gateway's value then replaces the upstream's. Without TLS an
  upstream's HSTS passes untouched.
* ``Cache-Control`` on authenticated responses and on the gateway's own responses: a shared cache
  storing a per-consumer answer would hand it to the next caller without asking the gateway
  (RFC 9111 section 3.5 protects ``Authorization`` only, not API-key headers). The upstream's value
  is kept when it already keeps shared caches out (a bare ``no-store``, ``private`` or
  ``no-cache``) and asks for no shared storage (``public``, ``s-maxage``); otherwise it becomes
  ``no-store``. Unauthenticated responses on public routes keep the upstream's caching.

What it refuses to do: rewrite bodies, or edit headers on the request path.
"""

from __future__ import annotations

from portcullis.config.model import SecurityHeadersConfig
from portcullis.config.types import parse_duration
from portcullis.http.context import RequestContext, ResponseHead
from portcullis.pipeline.base import PolicyBase, Stage

__all__ = ["SecurityHeadersPolicy"]

_CSP = b"content-security-policy"
_CACHE_CONTROL = b"cache-control"
_NO_STORE = (_CACHE_CONTROL, b"no-store")
_PRIVATE_DIRECTIVES = frozenset({b"no-store", b"private", b"no-cache"})
_SHARED_DIRECTIVES = frozenset({b"public", b"s-maxage"})


class SecurityHeadersPolicy(PolicyBase):
    """Header edits computed once; ``on_response`` is one pass over the headers."""

    name = "respond.security_headers"
    stage = Stage.RESPOND

    def __init__(self, config: SecurityHeadersConfig, *, tls: bool) -> None:
        fixed = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", config.frame_options.encode()),
            (b"referrer-policy", config.referrer_policy.encode()),
        ]
        # parse_duration: a Duration field left at its default may still hold the text ("10m").
        if tls:
            hsts = f"max-age={int(parse_duration(config.hsts_max_age))}"
            if config.hsts_include_subdomains:
                hsts += "; includeSubDomains"
            fixed.append((b"strict-transport-security", hsts.encode()))
        self._fixed = tuple(fixed)
        self._drop = frozenset(name.encode() for name in config.remove_headers) | {n for n, _ in fixed}
        csp = config.content_security_policy
        self._csp = (_CSP, csp.encode()) if csp else None

    def on_response(self, ctx: RequestContext, head: ResponseHead) -> None:
        drop = self._drop
        kept: list[tuple[bytes, bytes]] = []
        has_csp = False
        cache_control: list[bytes] = []
        for pair in head.headers:
            name = pair[0]
            if name in drop:
                continue
            if name == _CSP:
                has_csp = True
            elif name == _CACHE_CONTROL:
                cache_control.append(pair[1])
            kept.append(pair)
        kept.extend(self._fixed)
        if self._csp is not None and not has_csp:
            kept.append(self._csp)
        if (ctx.principal is not None or head.local) and not _keeps_shared_caches_out(cache_control):
            if cache_control:
                kept = [pair for pair in kept if pair[0] != _CACHE_CONTROL]
            kept.append(_NO_STORE)
        head.headers[:] = kept


def _keeps_shared_caches_out(values: list[bytes]) -> bool:
    """Whether Cache-Control already stops shared caches from reusing the response.

    Only bare directives count: ``private="set-cookie"`` or ``no-cache="x"`` restrict named fields
    only (RFC 9111 sections 5.2.2.4 and 5.2.2.7).
    """
    private = False
    for value in values:
        for directive in value.split(b","):
            name, _, argument = directive.strip().lower().partition(b"=")
            name = name.strip()
            if name in _SHARED_DIRECTIVES:
                return False
            if name in _PRIVATE_DIRECTIVES and not argument:
                private = True
    return private
