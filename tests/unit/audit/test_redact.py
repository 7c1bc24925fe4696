"""What an audit record may say: provider keys and passwords masked in every field, ordinary text kept.

Key values are made up but shaped as published (sources on each row); they are built from parts so
that this file does not itself look like a leaked secret to a scanner.
"""

from __future__ import annotations

import orjson
import pytest

from portcullis.audit.record import AuditRecord
from portcullis.audit.redact import MASK, is_sensitive_name, redact_headers, redact_query, redact_text
from portcullis.testing import ManualClock

B62 = "Zq8Xk2Lm9Pv4Rt7Ws1Yb5Nc3Hd6Fg0Ja"  # 32 made-up base62 characters


def _chars(n: int, alphabet: str = B62) -> str:
    return (alphabet * (n // len(alphabet) + 1))[:n]


UPPER = "QX7TZ3RWV9KM2HPL"  # 16 made-up uppercase alphanumerics

# (prefix kept in the record, the whole key)
PROVIDER_KEYS = [
    # OpenAI: legacy user keys are sk- + 48 base62 (gitleaks openai-api-key); project, service
    # account and admin keys are sk-proj-/sk-svcacct-/sk-admin- + base64url with T3BlbkFJ inside.
    pytest.param("sk-", "sk-" + _chars(48), id="openai-legacy-sk"),
    pytest.param("sk-proj-", "sk-proj-" + _chars(74) + "T3BlbkFJ" + _chars(74), id="openai-sk-proj"),
    pytest.param("sk-svcacct-", "sk-svcacct-" + _chars(58) + "T3BlbkFJ" + _chars(58), id="openai-sk-svcacct"),
    # Anthropic: sk-ant-api03- + 93 base64url + AA (gitleaks anthropic-api-key); admin keys sk-ant-admin01-.
    pytest.param("sk-ant-", "sk-ant-api03-" + _chars(93, B62 + "-_") + "AA", id="anthropic-sk-ant-api03"),
    pytest.param("sk-ant-", "sk-ant-admin01-" + _chars(93) + "AA", id="anthropic-sk-ant-admin01"),
    # GitHub: "Behind GitHub's new authentication token formats" (github.blog 2021-04-05) and the
    # secret scanning pattern list: gh[pousr]_ + 36 base62; github_pat_ + 22 + _ + 59.
    pytest.param("ghp_", "ghp_" + _chars(36), id="github-ghp-personal"),
    pytest.param("gho_", "gho_" + _chars(36), id="github-gho-oauth"),
    pytest.param("ghu_", "ghu_" + _chars(36), id="github-ghu-user-to-server"),
    pytest.param("ghs_", "ghs_" + _chars(36), id="github-ghs-server-to-server"),
    pytest.param("ghr_", "ghr_" + _chars(36), id="github-ghr-refresh"),
    pytest.param("github_pat_", "github_pat_" + _chars(22) + "_" + _chars(59), id="github-fine-grained-pat"),
    # Slack token types (api.slack.com "Token types"; gitleaks slack-bot-token, slack-user-token, ...).
    pytest.param("xoxb-", "xoxb-1234567890123-1234567890123-" + _chars(24), id="slack-xoxb-bot"),
    pytest.param("xoxp-", "xoxp-1234567890123-1234567890123-1234567890123-" + _chars(32).lower(), id="slack-xoxp-user"),
    pytest.param("xoxa-", "xoxa-2-" + _chars(40), id="slack-xoxa-app"),
    pytest.param("xoxr-", "xoxr-" + _chars(40), id="slack-xoxr-refresh"),
    pytest.param("xoxs-", "xoxs-" + _chars(40), id="slack-xoxs-session"),
    # AWS IAM "Unique identifiers": AKIA (long-term) / ASIA (temporary) + 16 uppercase alphanumerics.
    pytest.param("AKIA", "AKIA" + UPPER, id="aws-AKIA-access-key-id"),
    pytest.param("ASIA", "ASIA" + UPPER, id="aws-ASIA-temporary-key-id"),
    # Stripe "API keys" docs: sk_/rk_ + live_/test_ + base62; webhook signing secrets whsec_.
    pytest.param("sk_live_", "sk_live_" + _chars(24), id="stripe-sk_live"),
    pytest.param("sk_test_", "sk_test_" + _chars(99), id="stripe-sk_test"),
    pytest.param("rk_live_", "rk_live_" + _chars(24), id="stripe-rk_live"),
    pytest.param("rk_test_", "rk_test_" + _chars(24), id="stripe-rk_test"),
    pytest.param("whsec_", "whsec_" + _chars(32), id="stripe-whsec-webhook"),
    # Google Cloud "API keys": AIza + 35 base64url (gitleaks gcp-api-key).
    pytest.param("AIza", "AIza" + _chars(35, B62 + "-_"), id="google-AIza-api-key"),
]


def _record(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "request_id": "r1", "client_ip": "203.0.113.9", "consumer_id": None, "key_id": None, "method": "GET",
        "route": "api", "path": "/v1/items", "query": None, "status": 200, "decision": "allowed",
        "latency_ms": 1.0, "bytes_in": 0, "bytes_out": 0, "upstream_status": 200, "user_agent": None,
        "egress": None,
    }
    fields.update(overrides)
    stored: dict[str, object] = orjson.loads(AuditRecord.create(clock=ManualClock(), **fields).to_json_bytes())
    return stored


@pytest.mark.parametrize(("prefix", "key"), PROVIDER_KEYS)
@pytest.mark.parametrize("where", ["path", "query-value", "query-name", "user_agent", "decision", "egress"])
def test_a_provider_key_is_masked_in_every_field_of_a_record(prefix: str, key: str, where: str) -> None:
    secret = key[len(prefix):]
    fields: dict[str, object] = {
        "path": {"path": f"/v1/keys/{key}/rotate"},
        "query-value": {"query": redact_query(f"q={key}&page=2")},
        "query-name": {"query": redact_query(key)},
        "user_agent": {"user_agent": f"deploy-bot/1.0 ({key})"},
        "decision": {"decision": f"invalid_request:{key}"},
        "egress": {"egress": {"workflow_id": key, "attempts": 1, "secrets": [key]}},
    }[where]
    raw = orjson.dumps(_record(**fields)).decode()
    assert secret not in raw
    assert secret[:12] not in raw
    assert prefix + MASK in raw or prefix + "%5BREDACTED%5D" in raw


@pytest.mark.parametrize(("prefix", "key"), PROVIDER_KEYS)
def test_a_provider_key_in_a_header_with_an_ordinary_name_is_masked(prefix: str, key: str) -> None:
    assert redact_headers([("x-upstream-note", f"see {key}")]) == [("x-upstream-note", f"see {prefix}{MASK}")]


PASSWORD_NAMES = [
    pytest.param("pass", id="pass"),
    pytest.param("PASS", id="PASS-upper-case"),
    pytest.param("Pass", id="Pass-capitalised"),
    pytest.param("passwd", id="passwd"),
    pytest.param("pwd", id="pwd"),
    pytest.param("password", id="password"),
    pytest.param("PassWord", id="PassWord-mixed-case"),
    pytest.param("passphrase", id="passphrase"),
    pytest.param("pass_phrase", id="pass_phrase-underscore"),
    pytest.param("pass-word", id="pass-word-hyphen"),
    pytest.param("pass_word", id="pass_word-underscore"),
    pytest.param("user_pass", id="user_pass"),
    pytest.param("db-pwd", id="db-pwd"),
    pytest.param("userPass", id="userPass-camel-case"),
    pytest.param("a[pass]", id="a[pass]-php-rails-nested"),
    pytest.param("user[password]", id="user[password]-nested"),
    pytest.param("user[pass_phrase]", id="user[pass_phrase]-nested"),
]


@pytest.mark.parametrize("name", PASSWORD_NAMES)
def test_a_password_parameter_is_masked_in_the_query(name: str) -> None:
    masked = redact_query(f"user=jane&{name}=hunter2-Secret&page=2")
    assert "hunter2" not in masked
    assert masked.startswith("user=jane&") and masked.endswith(f"={MASK}&page=2")


@pytest.mark.parametrize("name", ["compass", "passage", "bypass", "passenger", "page", "sort", "include", "user"])
def test_words_that_merely_contain_pass_are_not_secret_names(name: str) -> None:
    assert not is_sensitive_name(name)
    assert redact_query(f"{name}=visible-value") == f"{name}=visible-value"


ORDINARY = [
    pytest.param("/skills", id="skills-path"),
    pytest.param("/skills/python/sk-learn-tutorial-for-beginners", id="sk-hyphenated-words"),
    pytest.param("task-" + _chars(40), id="task-id-ending-in-sk-"),
    pytest.param("desk-" + _chars(40), id="desk-slug"),
    pytest.param("AKIAlowercase", id="AKIA-then-lower-case"),
    pytest.param("AKIA" + UPPER[:10], id="AKIA-too-short"),
    pytest.param("XAKIA" + UPPER, id="AKIA-inside-a-word"),
    pytest.param("AIzaTooShort", id="AIza-too-short"),
    pytest.param("risk_live_updates", id="sk_live-inside-a-word"),
    pytest.param("ghost_protocol", id="gh-word"),
    pytest.param("xoxo-hugs", id="xoxo"),
    pytest.param("whsec_short", id="whsec-too-short"),
    pytest.param("a507d474c37cc643a1e6395ae5d4cf1f", id="hex-request-id"),
    # 13 leading digits that pass the Luhn check, then hex: an id, not a card number. Found as a
    # flaky audit test where one request id in a few hundred came back as "[CARD]f3ee…".
    pytest.param("5607377059180f3ee53f0b5c6c969531", id="hex-id-starting-with-a-luhn-valid-digit-run"),
    pytest.param("/v1/objects/x4111111111111111y", id="card-like-digits-inside-a-word"),
    pytest.param("ord_1234567890", id="order-id"),
    pytest.param("/v1/orders/9f8e7d6c/lines", id="ordinary-path"),
    pytest.param("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.129",
                 id="browser-user-agent"),
    pytest.param("invalid_request:body_too_large", id="gateway-reason"),
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_left_as_it_is(text: str) -> None:
    assert redact_text(text) == text
    assert _record(path=text, user_agent=text, decision=text)["path"] == text


CARDS = [
    # Visa and Mastercard test numbers from the card networks' public test lists.
    pytest.param("/v1/cards/4111111111111111", id="card-in-a-path"),
    pytest.param("paid with 5555 5555 5555 4444 today", id="card-with-spaces"),
    pytest.param("pan=4111-1111-1111-1111&x=1", id="card-with-hyphens-in-a-query"),
]


@pytest.mark.parametrize("text", CARDS)
def test_a_card_number_standing_apart_is_masked(text: str) -> None:
    assert "[CARD]" in redact_text(text)


def test_identifier_fields_are_kept_exactly_even_when_they_look_like_a_card() -> None:
    record = _record(request_id="4111111111111111", consumer_id="4111111111111111", key_id="k1",
                     client_ip="203.0.113.9", route="api", path="/v1/cards/4111111111111111")
    assert (record["request_id"], record["consumer_id"]) == ("4111111111111111", "4111111111111111")
    assert record["path"] == "/v1/cards/[CARD]"


def test_a_plain_query_comes_back_exactly_as_sent() -> None:
    assert redact_query(b"page=2&sort=desc&include=items") == "page=2&sort=desc&include=items"


def test_a_password_hidden_behind_percent_encoding_is_still_masked() -> None:
    assert redact_query("p%61ss=hunter2&q=gh%70_" + _chars(36)) == f"pass={MASK}&q=ghp_{MASK}"


def test_an_admin_token_is_masked_like_an_api_key_keeping_its_id() -> None:
    # identity.admin_tokens: pca_ + 12-character token id + _ + 43 base64url characters.
    token = "pca_" + "a1b2c3d4e5f6" + "_" + _chars(43, B62 + "-_")
    assert redact_text(f"admin {token} sent") == f"admin pca_a1b2c3d4e5f6_{MASK} sent"
    assert redact_query(f"token={token}") == f"token={MASK}"
    assert redact_query(f"x={token}") == f"x=pca_a1b2c3d4e5f6_{MASK}"
