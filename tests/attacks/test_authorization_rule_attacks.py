"""Attacks on CEL authorization rules: runaway expressions, ambiguous inputs, injection, bad rules at load.

Sources: CEL's own threat model (a rule must not loop or allocate without bound: the language is
not Turing complete and the runtime stops after an iteration budget); HTTP parameter pollution
(OWASP WSTG-INPV-04: a duplicated parameter read as the first copy by one component and the last
by another, the same idea as duplicated headers); JSON duplicate keys (CVE-2017-12635); and
expression injection, where request data would become code if a gateway built expressions from
strings (it never does: values are variables, never spliced into the text).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml
from typer.testing import CliRunner

from portcullis.cli.main import app as cli
from portcullis.config.loader import load_config_text
from portcullis.errors import ConfigError

TEN = "[" + ",".join(str(i) for i in range(30)) + "]"
CONFIG = f"""
routes:
  - name: runaway
    path: /runaway
    upstream: api
    authorize:
      rules:
        - {{name: cubic, when: "{TEN}.all(a, {TEN}.all(b, {TEN}.all(c, a + b + c >= 0)))"}}
  - name: runs
    methods: [POST]
    path: /runs
    upstream: api
    request: {{json: {{}}}}
    authorize:
      headers: [x-run-mode]
      query: [mode]
      rules:
        - {{name: mode, when: "request.headers['x-run-mode'] == 'validate_only'"}}
        - {{name: query-mode, when: "!('mode' in request.query) || request.query['mode'] == 'dry'"}}
        - {{name: amount, when: "body.amount <= 100"}}
"""


@pytest.fixture
async def gw(make_gateway: GatewayFactory, upstream: UpstreamServer):  # type: ignore[no-untyped-def]
    gateway = await make_gateway(gateway_yaml(upstream.url, CONFIG))
    gateway.headers = {"X-API-Key": await gateway.key("mallory")}
    return gateway


async def test_a_rule_that_would_run_for_ever_is_stopped_by_its_budget_and_refuses(gw, upstream) -> None:  # type: ignore[no-untyped-def]
    answer = await gw.client.get("/runaway", headers=gw.headers)
    assert answer.status_code == 403 and answer.json()["code"] == "authz.forbidden"
    ok = await gw.client.post("/runs", json={"amount": 1}, headers={**gw.headers, "X-Run-Mode": "validate_only"})
    assert ok.status_code == 200  # the gateway carries on serving
    assert [s.raw_path for s in upstream.seen] == ["/runs"]


@pytest.mark.parametrize("headers", [
    [("X-Run-Mode", "validate_only"), ("X-Run-Mode", "full_run")],
    [("X-Run-Mode", "full_run"), ("x-run-mode", "validate_only")],
    [("x-run-mode", "validate_only"), ("X-RUN-MODE", "validate_only")],  # even two equal copies
])
async def test_a_listed_header_sent_twice_refuses_whatever_the_copies_say(gw, upstream, headers) -> None:  # type: ignore[no-untyped-def]
    answer = await gw.client.post("/runs", json={"amount": 1}, headers=[*gw.headers.items(), *headers])
    assert answer.status_code == 403
    assert upstream.seen == []
    [record] = await gw.audit_records()
    assert record["decision"] == "forbidden:rule:ambiguous_input"


@pytest.mark.parametrize("query", ["mode=dry&mode=live", "mode=live&mode=dry", "mode=dry&mode=dry", "mode=dry&mod%65=live"])
async def test_a_listed_query_parameter_sent_twice_refuses(gw, upstream, query) -> None:  # type: ignore[no-untyped-def]
    answer = await gw.client.post(f"/runs?{query}", json={"amount": 1},
                                  headers={**gw.headers, "X-Run-Mode": "validate_only"})
    assert answer.status_code == 403 and upstream.seen == []


async def test_a_body_with_a_duplicated_key_never_reaches_the_rule_or_the_backend(gw, upstream) -> None:  # type: ignore[no-untyped-def]
    answer = await gw.client.post("/runs", content=b'{"amount": 1, "amount": 5000}', headers={
        **gw.headers, "X-Run-Mode": "validate_only", "Content-Type": "application/json"})
    assert answer.status_code == 400 and upstream.seen == []


@pytest.mark.parametrize("value", [
    "validate_only' || true || '",
    'validate_only" || true || "',
    "validate_only\\u0027 || true",
    "full_run') || (true",
])
async def test_header_values_are_data_never_expression_text(gw, upstream, value) -> None:  # type: ignore[no-untyped-def]
    answer = await gw.client.post("/runs", json={"amount": 1}, headers={**gw.headers, "X-Run-Mode": value})
    assert answer.status_code == 403 and upstream.seen == []


async def test_a_body_that_does_not_fit_the_rule_is_refused_not_crashed(gw, upstream) -> None:  # type: ignore[no-untyped-def]
    headers = {**gw.headers, "X-Run-Mode": "validate_only"}
    for body in ({"amount": "lots"}, {"other": 1}, [1, 2], {"amount": 10**30}, None):
        answer = await gw.client.post("/runs", json=body, headers=headers)
        assert answer.status_code == 403, body
    no_body = await gw.client.post("/runs", headers=headers)
    assert no_body.status_code == 403  # body == null: body.amount is an error, and an error refuses
    assert upstream.seen == []


def _route(rules: str, request: str = "") -> str:
    return gateway_yaml("http://127.0.0.1:9", f"""
routes:
  - name: r
    path: /r/{{user_id}}
    upstream: api
    {request}
    authorize:
      rules: {rules}
""")


@pytest.mark.parametrize(("rules", "says"), [
    ('[{name: t, when: "params.user_id == 3"}]', "no matching overload for '_==_' applied to '(string, int)'"),
    ('[{name: t, when: "secrets.admin == true"}]', "undeclared reference to 'secrets.admin'"),
    ('[{name: t, when: "params.user_id"}]', "a rule must be true or false, not string"),
    ('[{name: t, when: "params.user_id == "}]', "Syntax error"),
    ('[{name: t, when: "' + "true && " * 600 + 'true"}]', "at most 4096 characters"),
    ('[{name: t, when: "body.amount < 5"}]', "reads `body`, so the route must validate a JSON body"),
    ('[{name: "Bad Name", when: "true"}]', "names are lowercase"),
])
def test_a_rule_that_cannot_hold_is_refused_when_the_config_loads(rules: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config_text(_route(rules))
    assert says in str(refused.value) and "authorize.rules" in str(refused.value)


def test_portcullis_check_shows_the_error_and_where(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(_route('[{name: own, when: "params.user_id == principal.id && params.user_id > 3"}]'))
    ok = tmp_path / "ok.yaml"
    ok.write_text(_route('[{name: own, when: "params.user_id == principal.id"}]'))
    refused = CliRunner().invoke(cli, ["check", str(path)], env={"COLUMNS": "200"})
    assert refused.exit_code != 0
    assert "routes.0.authorize.rules.0" in refused.output or "routes[0].authorize.rules[0]" in refused.output
    accepted = CliRunner().invoke(cli, ["check", str(ok)], env={"COLUMNS": "200"})
    assert accepted.exit_code == 0, accepted.output
