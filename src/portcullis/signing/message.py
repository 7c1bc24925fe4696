"""RFC 9421 HTTP Message Signatures: the request facts, the signature base, and the signature fields.

One module builds the signature base for both sides (the client signer and the gateway verifier),
so the two can never drift. The base (RFC 9421 section 2.5) is one line per covered component,
``"<identifier>": <value>``, then the ``"@signature-params"`` line, the serialized inner list from
``Signature-Input``. Structured fields are parsed and serialized by ``http_sf`` (RFC 8941/9651);
nothing here hand-parses ``Signature-Input`` or ``Signature``.

What is understood: the derived components ``@method``, ``@target-uri``, ``@authority``,
``@scheme``, ``@request-target``, ``@path`` and ``@query`` (section 2.2), and header fields by
their lowercase names (section 2.1), several lines joined by ``", "``. Component parameters
(``sf``, ``key``, ``bs``, ``req``, ``tr``, ``@query-param;name=``) are refused as unsupported: a
verifier that guesses at a component it does not implement verifies something other than what
was signed.

What is refused, each as ``Unauthenticated`` with the reason for the audit: more than one
signature label (an ambiguous request: which signature would authorize it?), a label in one field
and not the other, duplicate labels or covered components, a component the request lacks, values
with a line break, and parameters of the wrong type.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import http_sf
from http_sf.innerlist import ser_innerlist
from http_sf.item import ser_item

from portcullis.errors import Unauthenticated

__all__ = [
    "DERIVED_COMPONENTS",
    "ParsedSignature",
    "RequestFacts",
    "component_value",
    "parse_signature",
    "signature_base",
    "signature_params",
]

DERIVED_COMPONENTS = frozenset(
    {"@method", "@target-uri", "@authority", "@scheme", "@request-target", "@path", "@query"}
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_INT_PARAMS = ("created", "expires")
_STR_PARAMS = ("nonce", "alg", "keyid", "tag")


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """The parts of a request a signature can cover, as the verifier (or signer) saw them.

    ``authority`` is ``host[:port]`` without the scheme's default port; ``path`` is the path as
    sent (never empty for an origin-form request); ``query`` is what follows ``?``, without it
    (``None`` when the target has no ``?``). ``headers`` are (lowercase name, value) pairs.
    """

    method: str
    scheme: str
    authority: str
    path: str
    query: str | None
    headers: Sequence[tuple[bytes, bytes]] = field(default=())

    @staticmethod
    def normal_authority(scheme: str, host: str) -> str:
        """``host[:port]`` lowercased, the scheme's default port left out (RFC 9421 section 2.2.3)."""
        host = host.strip().lower()
        default = _DEFAULT_PORTS.get(scheme.lower())
        suffix = f":{default}"
        if default is not None and host.endswith(suffix) and (
            not host.startswith("[") or host[: -len(suffix)].endswith("]")
        ):
            return host[: -len(suffix)]
        return host

    def header_values(self, name: str) -> list[bytes]:
        wanted = name.encode("latin-1")
        return [v for k, v in self.headers if k.lower() == wanted]


@dataclass(frozen=True, slots=True)
class ParsedSignature:
    """The one signature a request carries: its label, covered components, parameters and bytes."""

    label: str
    components: tuple[str, ...]
    params: dict[str, Any]
    inner_list: Any  # the parsed inner list, serialized again for the "@signature-params" line
    signature: bytes

    @property
    def keyid(self) -> str | None:
        value = self.params.get("keyid")
        return value if isinstance(value, str) else None

    @property
    def created(self) -> int | None:
        value = self.params.get("created")
        return value if isinstance(value, int) else None

    @property
    def expires(self) -> int | None:
        value = self.params.get("expires")
        return value if isinstance(value, int) else None

    @property
    def nonce(self) -> str | None:
        value = self.params.get("nonce")
        return value if isinstance(value, str) else None

    @property
    def alg(self) -> str | None:
        value = self.params.get("alg")
        return value if isinstance(value, str) else None


def component_value(facts: RequestFacts, name: str) -> str:
    """The value of one covered component (RFC 9421 sections 2.1 and 2.2)."""
    if name.startswith("@"):
        query = facts.query
        if name == "@method":
            return facts.method
        if name == "@authority":
            return facts.authority.lower()
        if name == "@scheme":
            return facts.scheme.lower()
        if name == "@path":
            return facts.path or "/"
        if name == "@query":
            return "?" + (query or "")
        if name == "@request-target":
            return (facts.path or "/") + ("" if query is None else "?" + query)
        if name == "@target-uri":
            return f"{facts.scheme.lower()}://{facts.authority.lower()}{facts.path or '/'}" + (
                "" if query is None else "?" + query)
        raise Unauthenticated("unsupported_component")
    values = facts.header_values(name)
    if not values:
        raise Unauthenticated("missing_component_value")
    text = ", ".join(v.decode("latin-1").strip() for v in values)
    if "\n" in text or "\r" in text:
        raise Unauthenticated("malformed_component_value")
    return text


def signature_base(facts: RequestFacts, components: Sequence[str], inner_list: Any) -> bytes:
    """The bytes that are signed (RFC 9421 section 2.5)."""
    lines = [f"{ser_item((name, {}))}: {component_value(facts, name)}" for name in components]
    lines.append(f'"@signature-params": {ser_innerlist(inner_list)}')
    return "\n".join(lines).encode("latin-1")


def signature_params(components: Sequence[str], params: Mapping[str, int | str]) -> Any:
    """The inner list a signer puts in ``Signature-Input`` (components in order, then parameters)."""
    return ([(name, {}) for name in components], dict(params))


def parse_signature(inputs: Sequence[bytes], signatures: Sequence[bytes]) -> ParsedSignature:
    """The single signature of a request, from its ``Signature-Input`` and ``Signature`` lines."""
    try:
        input_dict = http_sf.parse(b", ".join(inputs), tltype="dictionary", on_duplicate_key=_refuse_duplicate)
        sig_dict = http_sf.parse(b", ".join(signatures), tltype="dictionary", on_duplicate_key=_refuse_duplicate)
    except (http_sf.StructuredFieldError, ValueError, UnicodeError):
        raise Unauthenticated("malformed_signature") from None
    if not isinstance(input_dict, dict) or not isinstance(sig_dict, dict):  # pragma: no cover
        raise Unauthenticated("malformed_signature")
    if len(input_dict) != 1 or len(sig_dict) != 1:
        raise Unauthenticated("ambiguous_signature")
    label = next(iter(input_dict))
    if label not in sig_dict:
        raise Unauthenticated("signature_label_mismatch")
    inner = input_dict[label]
    sig_member = sig_dict[label]
    if not (isinstance(inner, tuple) and isinstance(inner[0], list)):
        raise Unauthenticated("malformed_signature")
    signature = sig_member[0] if isinstance(sig_member, tuple) else sig_member
    if not isinstance(signature, bytes) or not signature:
        raise Unauthenticated("malformed_signature")
    components: list[str] = []
    for item in inner[0]:
        name, item_params = item if isinstance(item, tuple) else (item, {})
        if not isinstance(name, str) or isinstance(name, bool):
            raise Unauthenticated("malformed_signature")
        if item_params:
            raise Unauthenticated("unsupported_component")
        if name != name.lower():
            raise Unauthenticated("malformed_signature")  # RFC 9421 section 2.1: lowercase names only
        if name.startswith("@") and name not in DERIVED_COMPONENTS:
            raise Unauthenticated("unsupported_component")
        if name in components:
            raise Unauthenticated("duplicate_component")
        components.append(name)
    params = dict(inner[1])
    for key in _INT_PARAMS:
        if key in params and (not isinstance(params[key], int) or isinstance(params[key], bool)):
            raise Unauthenticated("malformed_signature")
    for key in _STR_PARAMS:
        if key in params and (not isinstance(params[key], str) or isinstance(params[key], http_sf.Token)):
            raise Unauthenticated("malformed_signature")
    return ParsedSignature(label=label, components=tuple(components), params=params, inner_list=inner,
                           signature=signature)


def _refuse_duplicate(key: str, _context: str) -> None:
    raise ValueError(f"duplicate member {key!r}")
