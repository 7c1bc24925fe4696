"""The ingress HTTP/1.1 upstream client: framing rules, one connection, the pool, the client."""

from portcullis.upstream.http1.client import Http1Response, Http1Upstream

__all__ = ["Http1Response", "Http1Upstream"]
