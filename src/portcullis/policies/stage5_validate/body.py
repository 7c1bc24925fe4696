"""Request body validation: the declared media type, and the JSON structure limits.

Why at the gateway: a backend that parses whatever arrives lets ``text/plain`` carry JSON past a
CSRF check (no preflight for ``text/plain``) and lets a body the gateway never looked at through.
So a route that validates JSON requires a JSON media type, and every body on it must be one bounded,
unambiguous document (``json_guard.check_json``).

Which media types: the route's ``content_types`` when set (exact ``type/subtype``, ``type/*``, or
``type/*+suffix``), otherwise, when JSON validation is on, ``application/json`` and
``application/*+json``. Only the media type is compared, case-insensitively; parameters such as
``charset`` are ignored (orjson accepts UTF-8 only, so another charset fails as invalid JSON).
When JSON validation is on, every body is checked as JSON whatever its allowed type: a type the
operator allowed is not a reason to skip the check.

Which requests carry a body: those with ``Content-Length`` above zero or any ``Transfer-Encoding``
(RFC 9112 section 6.3); the ingress forwards no body otherwise, so those need no content type.

What it refuses to do: buffer beyond ``ctx.max_body_bytes`` (``read_body`` raises
``PayloadTooLarge``, rendered as 413 by the app), or say which limit failed (the reason goes to the
audit only).
"""

from __future__ import annotations

import re

from portcullis.config.model import RequestConfig
from portcullis.errors import ConfigError, ErrorCode
from portcullis.http.context import RequestContext
from portcullis.http.headers import get_all, get_one
from portcullis.pipeline.base import Decision, PolicyBase, Reject, Stage
from portcullis.policies.stage5_validate.json_guard import check_json

__all__ = ["BodyPolicy", "carries_body"]

_JSON_TYPES = ("application/json", "application/*+json")
# RFC 6838 section 4.2 restricted names, lowercased.
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_MEDIA_PATTERN = re.compile(r"([a-z0-9][a-z0-9!#$&^_.+-]*)/\*(\+[a-z0-9!#$&^_.-]+)?")
_WRONG_TYPE = Reject(ErrorCode.REQUEST_UNSUPPORTED_MEDIA_TYPE, "invalid_request:content_type")


class BodyPolicy(PolicyBase):
    """Content-type enforcement and JSON limits for one route (``RequestConfig`` after defaults)."""

    name = "validate.body"
    stage = Stage.VALIDATE

    def __init__(self, config: RequestConfig) -> None:
        json_cfg = config.json_body
        patterns = config.content_types or (list(_JSON_TYPES) if json_cfg is not None else [])
        exact: set[str] = set()
        wildcards: list[tuple[str, str]] = []  # (type, subtype suffix: "" for type/*, "+json")
        for i, pattern in enumerate(patterns):
            media = pattern.strip().lower()
            if _MEDIA_TYPE.fullmatch(media):
                exact.add(media)
            elif m := _MEDIA_PATTERN.fullmatch(media):
                wildcards.append((m.group(1), m.group(2) or ""))
            else:
                raise ConfigError(
                    "expected a media type such as application/json, text/* or application/*+json",
                    path=f"request.content_types[{i}]",
                )
        self._enforce_type = bool(patterns)
        self._exact = frozenset(exact)
        self._wildcards = tuple(wildcards)
        self._json = json_cfg is not None
        self._max_depth = json_cfg.max_depth if json_cfg else 0
        self._max_keys = json_cfg.max_keys if json_cfg else 0
        self._forbidden = frozenset(json_cfg.forbidden_keys) if json_cfg else frozenset()

    async def on_request(self, ctx: RequestContext) -> Decision | None:
        if not carries_body(ctx):
            return None
        if self._enforce_type and not self._type_allowed(ctx):
            return _WRONG_TYPE
        if self._json:
            body = await ctx.read_body()
            reason = check_json(
                body, max_depth=self._max_depth, max_keys=self._max_keys, forbidden_keys=self._forbidden
            )
            if reason is not None:
                return Reject(ErrorCode.REQUEST_INVALID_BODY, f"invalid_request:{reason}")
        return None

    def _type_allowed(self, ctx: RequestContext) -> bool:
        values = get_all(ctx.headers, b"content-type")
        if len(values) != 1:
            return False  # missing, or two types to choose from (RFC 9110 section 8.3 has one)
        media = values[0].split(b";", 1)[0].strip().lower().decode("latin-1")
        if media in self._exact:
            return True
        if not self._wildcards or not _MEDIA_TYPE.fullmatch(media):
            return False
        major, _, minor = media.partition("/")
        return any(
            major == want_major and minor.endswith(suffix) and len(minor) > len(suffix)
            for want_major, suffix in self._wildcards
        )


def carries_body(ctx: RequestContext) -> bool:
    """Whether the request has (or may have) a body: framed by Transfer-Encoding or a non-zero Content-Length."""
    if get_one(ctx.headers, b"transfer-encoding") is not None:
        return True
    if ctx.content_length is not None:
        return ctx.content_length > 0
    # The ingress parses Content-Length into ctx.content_length; a header it did not parse is not
    # trusted to mean "no body".
    return get_one(ctx.headers, b"content-length") is not None
