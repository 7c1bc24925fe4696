"""``Proxy-Authorization`` parsing: the two documented forms, and everything else refused before a lookup."""

from __future__ import annotations

import base64

import pytest

from portcullis.egress.proxy.auth import parse_proxy_authorization
from portcullis.egress.proxy.base import ProxyCredentials
from portcullis.errors import Unauthenticated

KEY = "pcl_abcdefghijkl_" + "A" * 43


def _basic(text: str) -> tuple[bytes, bytes]:
    return b"proxy-authorization", b"Basic " + base64.b64encode(text.encode())


@pytest.mark.parametrize(("user", "workflow", "execution"), [
    ("wf=nightly;ex=run-42", "nightly", "run-42"),
    ("ex=run-42;wf=nightly", "nightly", "run-42"),  # any order
    ("wf=a.b_c-d;ex=E.1", "a.b_c-d", "E.1"),
])
def test_basic_carries_the_key_as_password_and_the_context_as_user(user: str, workflow: str, execution: str) -> None:
    assert parse_proxy_authorization([_basic(f"{user}:{KEY}")]) == ProxyCredentials("basic", KEY, workflow, execution)


def test_the_scheme_is_case_insensitive_and_the_password_may_hold_colons() -> None:
    token = base64.b64encode(b"wf=w;ex=e:pa:ss")
    assert parse_proxy_authorization([(b"proxy-authorization", b"bAsIc " + token)]).api_key == "pa:ss"


def test_bearer_takes_the_context_from_the_door_headers() -> None:
    headers = [(b"proxy-authorization", f"Bearer {KEY}".encode()), (b"x-workflow-id", b"wf:1"),
               (b"x-execution-id", b"ex-1")]
    assert parse_proxy_authorization(headers) == ProxyCredentials("bearer", KEY, "wf:1", "ex-1")


def test_basic_ignores_context_headers() -> None:
    headers = [_basic(f"wf=w;ex=e:{KEY}"), (b"x-workflow-id", b"other"), (b"x-execution-id", b"other")]
    assert parse_proxy_authorization(headers).workflow_id == "w"


def test_the_key_never_shows_in_the_credentials_repr() -> None:
    assert KEY not in repr(parse_proxy_authorization([_basic(f"wf=w;ex=e:{KEY}")]))


@pytest.mark.parametrize(("headers", "reason"), [
    ([], "proxy_credentials_missing"),
    ([_basic(f"wf=w;ex=e:{KEY}")] * 2, "proxy_credentials_repeated"),
    ([(b"proxy-authorization", b"Basic " + b"A" * 2000)], "proxy_credentials_malformed"),
    ([(b"proxy-authorization", b"Basic not-base64!")], "proxy_credentials_malformed"),
    ([(b"proxy-authorization", b"Basic " + base64.b64encode(b"\xff\xfe:x"))], "proxy_credentials_malformed"),
    ([_basic(f"{KEY}")], "proxy_credentials_malformed"),  # no colon
    ([_basic("wf=w;ex=e:")], "proxy_credentials_malformed"),  # no key
    ([_basic(f"alice:{KEY}")], "proxy_context_malformed"),
    ([_basic(f"wf=w:{KEY}")], "proxy_context_malformed"),  # execution missing
    ([_basic(f"wf=w;ex=e;wf=x:{KEY}")], "proxy_context_malformed"),  # repeated
    ([_basic(f"wf=w;ex=e;user=bob:{KEY}")], "proxy_context_malformed"),  # the user comes from the key, never the client
    ([_basic(f"wf=w w;ex=e:{KEY}")], "proxy_context_malformed"),
    ([_basic(f"wf={'a' * 129};ex=e:{KEY}")], "proxy_context_malformed"),
    ([(b"proxy-authorization", f"Bearer {KEY}".encode())], "proxy_context_missing"),
    ([(b"proxy-authorization", f"Bearer {KEY}".encode()), (b"x-workflow-id", b"w"), (b"x-execution-id", b"e e")],
     "proxy_context_malformed"),
    ([(b"proxy-authorization", b"Bearer a b")], "proxy_credentials_malformed"),
    ([(b"proxy-authorization", b"Negotiate abc")], "proxy_scheme_unsupported"),
], ids=["missing", "repeated", "oversized", "bad-base64", "not-utf8", "no-colon", "no-key", "plain-user",
        "half-context", "repeated-context", "user-claimed", "space-in-id", "long-id", "bearer-no-context",
        "bearer-bad-context", "bearer-two-tokens", "negotiate"])
def test_anything_else_is_refused_with_a_fixed_reason(headers: list[tuple[bytes, bytes]], reason: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        parse_proxy_authorization(headers)
    assert caught.value.reason == reason
