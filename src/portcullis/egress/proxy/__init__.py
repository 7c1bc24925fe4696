"""The proxy door: ``HTTPS_PROXY=http://…`` (and ``HTTP_PROXY``) guards any client, in any language.

Its parts, in the order a connection meets them:
- ``listener``: the socket, connection caps, the drain;
- ``reader``: requests off the stream (llhttp strict, the front door's framing rules and bounds);
- ``target``: ``CONNECT`` authorities and absolute-form URLs, parsed by the SSRF guard's rules;
- ``auth``: ``Proxy-Authorization`` (Basic with the API key as password and the call context as
  user name, or Bearer), parsed before any lookup;
- ``door``: one connection's requests in order; ``exchange``: writing, refusing and forwarding on
  it; ``tunnel``: one ``CONNECT``, admitted, then spliced unread or read (intercepted or plain);
- ``splice``: a tunnel's bytes both ways, bounded, with idle and total timeouts;
- ``authority``: the interception CA (``portcullis ca init``) and leaf certificates per host;
- ``answer``: the bytes answered, every refusal a problem document;
- ``base``: ``ProxyBackend``, what the door asks of the gateway, and the values crossing it.
"""

from portcullis.egress.proxy.base import (
    ForwardRequest,
    ForwardResponse,
    ProxyBackend,
    ProxyCredentials,
    ProxyIdentity,
    TunnelGrant,
    TunnelMode,
    TunnelRecord,
    TunnelRefused,
    TunnelRequest,
)
from portcullis.egress.proxy.exchange import ProxyDoorSettings
from portcullis.egress.proxy.listener import ProxyListener
from portcullis.egress.proxy.splice import SpliceLimits

__all__ = [
    "ForwardRequest",
    "ForwardResponse",
    "ProxyBackend",
    "ProxyCredentials",
    "ProxyDoorSettings",
    "ProxyIdentity",
    "ProxyListener",
    "SpliceLimits",
    "TunnelGrant",
    "TunnelMode",
    "TunnelRecord",
    "TunnelRefused",
    "TunnelRequest",
]
