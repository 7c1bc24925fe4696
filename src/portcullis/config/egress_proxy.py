"""The ``egress.proxy:`` section: the optional forward-proxy listener (``HTTPS_PROXY`` door).

Off unless written: a listener that opens tunnels is a door, and a door is never on by default.
Sizes and times mirror the API listener's (``listen:``) with the same safe defaults; the tunnel
times are the proxy's own. Interception needs ``ca`` (made by ``portcullis ca init``) and a
route that asks for it (``intercept: true``); nothing is intercepted otherwise.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from portcullis.config.types import ByteSize, Duration

__all__ = ["EgressProxyCaConfig", "EgressProxyConfig"]

_LISTEN = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class EgressProxyCaConfig(_Model):
    cert_file: str = Field(description="The interception CA's certificate (PEM), from `portcullis ca init`.")
    key_file: str = Field(description="The CA's private key (PEM); refused unless only its owner can read it (0600).")
    leaf_days: int = Field(7, ge=1, le=90, description="Validity of each minted host certificate, in days.")
    max_leaves: int = Field(1024, ge=1, le=100_000, description="Host certificates kept ready (least recently used "
                            "dropped first).")


class EgressProxyConfig(_Model):
    listen: str = Field(description="`host:port` of the proxy listener, e.g. `127.0.0.1:8081` (port 0: any free).")
    max_header_bytes: ByteSize = Field("16KiB", description="Largest request head (431 beyond).")
    max_header_count: int = Field(100, ge=1, le=10_000, description="Most header fields in one request (431).")
    max_body_bytes: ByteSize = Field("1MiB", description="Largest request body forwarded (413 beyond).")
    first_byte_timeout: Duration = Field("10s", description="A new connection silent this long is closed; also "
                                         "bounds the TLS handshake inside an intercepted tunnel.")
    head_timeout: Duration = Field("10s", description="From a request's first byte to its head's end (408 beyond).")
    body_timeout: Duration = Field("30s", description="Time for a request body, plus a second per 8 KiB received.")
    keepalive_timeout: Duration = Field("5s", description="Idle time between requests on one connection.")
    write_timeout: Duration = Field("30s", description="Longest a client may leave an answer unread.")
    tunnel_idle_timeout: Duration = Field("60s", description="A tunnel with no byte moving either way for this long "
                                          "is closed (a client that stops reading included).")
    tunnel_max_duration: Duration = Field("1h", description="Longest life of one tunnel (the route's "
                                          "`connect_timeout` bounds connecting it).")
    scopes: list[str] = Field(
        default_factory=list, description="Scopes an API key must hold (all of them) to use the proxy door; empty: "
        "any valid key.",
    )
    max_connections: int = Field(1024, ge=1, description="Open proxy connections (tunnels included); 503 beyond.")
    max_connections_per_ip: int = Field(128, ge=1, description="Open proxy connections from one address; 503 beyond.")
    ca: EgressProxyCaConfig | None = Field(
        None, description="The interception CA; needed only when a route says `intercept: true`.",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        match = _LISTEN.match(value)
        if match is None or int(match.group(2)) > 65535:
            raise ValueError("expected host:port, e.g. 127.0.0.1:8081")
        return value

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])
