"""``portcullis check`` and ``portcullis explain``: what an operator reads when a request is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from portcullis.cli.main import app

ROOT = Path(__file__).resolve().parents[3]
ENV = {"PORTCULLIS_KEY_PEPPER": "p" * 40, "IDP_HS_SECRET": "s" * 40, "COLUMNS": "300"}
runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=ENV, terminal_width=200)
    return result.exit_code, result.output


@pytest.mark.parametrize("example", ["quickstart.yaml", "reference.yaml", "several-instances.yaml"])
def test_check_accepts_the_shipped_examples(example: str) -> None:
    code, out = run("check", str(ROOT / "examples" / example))
    assert code == 0, out
    assert "is valid" in out


def test_check_lists_each_route_with_its_protections() -> None:
    code, out = run("check", str(ROOT / "examples" / "quickstart.yaml"))
    assert code == 0
    for text in ("orders-read", "orders:read", "orders-per-consumer", "none (public)", "auth.api_key", "limit.rate"):
        assert text in out, text


def test_check_shows_signature_and_webhook_routes_with_their_methods() -> None:
    code, out = run("check", str(ROOT / "examples" / "reference.yaml"))
    assert code == 0
    for text in ("signature(hmac-sha256,ed25519)", "webhook_signature(payments-provider)", "auth.signature",
                 "auth.webhook_signature"):
        assert text in out, text


def test_check_reports_errors_with_their_path_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstreams: {a: {url: 'http://127.0.0.1:1'}}\nroutes: [{name: r, path: /r, upstream: a, auth: none, cors: {allow_origins: ['*'], allow_credentials: true}}]\n")
    code, out = run("check", str(bad))
    assert code == 2
    assert "routes[0].cors" in out and "credentialed" in out
    assert "Traceback" not in out


JWT_CONFIG = """\
upstreams: {a: {url: 'http://127.0.0.1:1'}}
jwt_issuers:
  - {name: idp, issuer: 'https://idp.test', audiences: [api], algorithms: [RS256],
     jwks_uri: 'https://idp.test/jwks.json', jwks_cache_ttl: %s, jwks_min_refresh_interval: 30s}
routes: [{name: r, path: /r, upstream: a, auth: {jwt: {}}}]
"""


def test_check_warns_when_the_unknown_kid_interval_is_longer_than_the_jwks_ttl(tmp_path: Path) -> None:
    config = tmp_path / "jwt.yaml"
    config.write_text(JWT_CONFIG % "5s")
    code, out = run("check", str(config))
    assert code == 0, out
    assert (
        "⚠ jwt_issuers[0] (idp): jwks_min_refresh_interval (30s) is longer than jwks_cache_ttl (5s). The JWKS is "
        "still fetched every 5s, so a withdrawn key stops verifying and a new key is learned within 5s; the interval "
        "only limits the extra fetches unknown kids cause (one per 30s), it does not slow the TTL refresh.\n"
    ) in out
    assert out.index("⚠") < out.index("is valid")


def test_check_says_nothing_about_jwks_timing_when_the_ttl_is_the_longer(tmp_path: Path) -> None:
    config = tmp_path / "jwt.yaml"
    config.write_text(JWT_CONFIG % "10m")
    code, out = run("check", str(config))
    assert code == 0, out
    assert "jwks_min_refresh_interval" not in out


@pytest.mark.parametrize(("pool_size", "warned"), [(32, True), (33, False)])
def test_check_warns_when_stalled_clients_could_hold_an_upstream_pool(
    tmp_path: Path, pool_size: int, warned: bool
) -> None:
    config = tmp_path / "pool.yaml"
    config.write_text(f"upstreams: {{a: {{url: 'http://127.0.0.1:1', pool_size: {pool_size}}}}}\n"
                      "routes: [{name: r, path: /r, upstream: a, auth: none}]\n")
    code, out = run("check", str(config))
    assert code == 0, out
    assert ("⚠ upstreams.a.pool_size (32) is not above listen.max_stalled_responses (32)" in out) is warned


def test_explain_shows_canonical_path_route_and_chain() -> None:
    code, out = run("explain", str(ROOT / "examples" / "quickstart.yaml"), "GET", "/x/../orders//./42")
    assert code == 0, out
    assert "canonical: /orders/42\n" in out
    assert "route:     orders-read" in out


def test_explain_a_matching_request() -> None:
    code, out = run("explain", str(ROOT / "examples" / "quickstart.yaml"), "GET", "/orders/%7E42?x=1")
    assert code == 0, out
    assert "canonical: /orders/~42?x=1" in out
    assert "route:     orders-read" in out
    assert "order_id='~42'" in out
    chain = out[out.index("chain:"):]
    assert chain.index("auth.api_key") < chain.index("authz.scopes") < chain.index("limit.rate")


@pytest.mark.parametrize(("target", "reason"), [
    ("/orders/%2e%2e/%2e%2e/admin", "above_root"),
    ("/orders/a%2fb", "encoded_slash"),
    ("/orders/..;/admin", "path_param"),
])
def test_explain_names_why_a_target_is_rejected(target: str, reason: str) -> None:
    code, out = run("explain", str(ROOT / "examples" / "quickstart.yaml"), "GET", target)
    assert code == 3
    assert "request.target_invalid" in out and reason in out


def test_explain_absolute_form_with_another_host_is_rejected() -> None:
    code, out = run("explain", str(ROOT / "examples" / "quickstart.yaml"), "GET", "http://evil.example/orders/1",
                    "--header", "Host: api.example.com")
    assert code == 3
    assert "host_mismatch" in out


def test_explain_wrong_method_lists_the_allowed_ones() -> None:
    code, out = run("explain", str(ROOT / "examples" / "quickstart.yaml"), "DELETE", "/orders/1")
    assert code == 3
    assert "405" in out and "GET" in out


def test_config_reference_is_fresh() -> None:
    code, out = run("config-reference")
    assert code == 0
    committed = (ROOT / "docs" / "config-reference.md").read_text(encoding="utf-8")
    assert out == committed, "docs/config-reference.md is stale: run `portcullis config-reference --output docs/config-reference.md`"


HEADER_RULES = """
upstreams: {api: {url: "http://127.0.0.1:9000"}}
request: {reject_headers: [x-debug], remove_headers: [x-tenant-*]}
routes:
  - {name: legacy, path: /legacy, upstream: api, auth: none, request: {keep_headers: [x-http-method-override]}}
"""


def test_explain_shows_which_request_headers_are_removed_kept_or_refused(tmp_path: Path) -> None:
    config = tmp_path / "headers.yaml"
    config.write_text(HEADER_RULES)
    code, out = run("explain", str(config), "GET", "/legacy", "-H", "X_Consumer_Id: admin", "-H", "X-Original-URL: /a",
                    "-H", "X-HTTP-Method-Override: PATCH", "-H", "X-Custom-Trace: t")
    assert code == 0, out
    assert "removed:  default list (url_override, method_override, forwarding, foreign_identity), x-tenant-*" in out
    assert "kept:     x-http-method-override" in out
    assert "refused:  x-debug → 400 request.malformed" in out
    assert "-H x_consumer_id: replaced by the gateway's own value" in out
    assert "-H x-original-url: removed (url_override)" in out
    assert "-H x-http-method-override: forwarded" in out
    assert "-H x-custom-trace: forwarded" in out


def test_explain_a_refused_header_exits_3(tmp_path: Path) -> None:
    config = tmp_path / "headers.yaml"
    config.write_text(HEADER_RULES)
    code, out = run("explain", str(config), "GET", "/legacy", "-H", "X_Debug: 1")
    assert code == 3
    assert "-H x_debug: refused (configured)" in out
    assert "rejected:  400 request.malformed (reason: rejected_header:configured)" in out


EGRESS = """
keys: {pepper: "${PORTCULLIS_KEY_PEPPER}"}
upstreams: {api: {url: "http://127.0.0.1:9000"}}
request: {reject_headers: [x-debug], keep_headers: [x-user-id]}
routes: [{name: health, path: /health, upstream: api, auth: none}]
egress:
  routes:
    - {name: github, url: https://api.github.com, headers: {Authorization: "Bearer {secret:github_token}"}}
"""


def test_explain_an_egress_call_shows_what_reaches_the_provider(tmp_path: Path) -> None:
    config = tmp_path / "egress.yaml"
    config.write_text(EGRESS)
    code, out = run("explain", str(config), "POST", "/egress/github/repos/acme/app/issues?state=open",
                    "-H", "X_Consumer_Id: admin", "-H", "X-HTTP-Method-Override: DELETE", "-H", "Authorization: t",
                    "-H", "X_API_Key: k", "-H", "X-User-Id: u", "-H", "Accept: application/json")
    assert code == 0, out
    assert "route:     egress → github: https://api.github.com/repos/acme/app/issues?state=open" in out
    assert "  set:      authorization (the egress route's)" in out
    assert "removed:  default list (url_override, method_override, forwarding, foreign_identity)" in out
    assert "kept:     x-user-id" in out
    assert "-H x_consumer_id: removed (gateway_set)" in out  # not replaced: a provider gets none of them
    assert "-H x-http-method-override: removed (method_override)" in out
    assert "-H authorization: replaced by the egress route's value" in out
    assert "-H x_api_key: removed (the caller's gateway credential or context)" in out
    assert "-H x-user-id: sent to the provider" in out
    assert "-H accept: sent to the provider" in out


def test_explain_an_egress_call_with_a_refused_header_exits_3(tmp_path: Path) -> None:
    config = tmp_path / "egress.yaml"
    config.write_text(EGRESS)
    code, out = run("explain", str(config), "GET", "/egress/github/user", "-H", "X-Debug: 1")
    assert code == 3
    assert "rejected:  400 request.malformed (reason: rejected_header:configured)" in out


def test_explain_an_unknown_egress_route_exits_3(tmp_path: Path) -> None:
    config = tmp_path / "egress.yaml"
    config.write_text(EGRESS)
    code, out = run("explain", str(config), "GET", "/egress/gitlab/user")
    assert code == 3
    assert "no egress route named 'gitlab': 403 egress.destination_denied" in out


STREAMED = """
upstreams: {api: {url: "http://127.0.0.1:9000"}}
routes:
  - {name: uploads, path: /uploads, upstream: api, auth: none, request: {body_buffering: streamed, max_body_bytes: 5GiB}}
  - {name: orders, path: /orders, upstream: api, auth: none}
"""


def test_check_shows_whether_each_route_streams_its_body(tmp_path: Path) -> None:
    config = tmp_path / "streamed.yaml"
    config.write_text(STREAMED)
    code, out = run("check", str(config))
    assert code == 0, out
    uploads = out[out.index("│ uploads"):out.index("│ orders")]
    assert "body≤5368709120" in uploads and "body streamed" in uploads
    assert "body buffered" in out[out.index("│ orders"):]


@pytest.mark.parametrize(("target", "expected"), [
    pytest.param("/uploads", "body:      streamed (at most 5368709120 bytes): forwarded as it arrives", id="streamed"),
    pytest.param("/orders", "body:      buffered (at most 1048576 bytes): read and checked whole", id="buffered"),
])
def test_explain_shows_how_a_route_reads_its_body(tmp_path: Path, target: str, expected: str) -> None:
    config = tmp_path / "streamed.yaml"
    config.write_text(STREAMED)
    code, out = run("explain", str(config), "POST", target)
    assert code == 0, out
    assert expected in out


def test_check_shows_certificate_routes_and_required_combinations() -> None:
    code, out = run("check", str(ROOT / "examples" / "reference.yaml"))
    assert code == 0
    assert "mtls(+xfcc)" in out
    assert "api_key + mtls" in out


EGRESS_FLOW = """
upstreams: {a: {url: 'http://127.0.0.1:1'}}
routes: [{name: r, path: /r, upstream: a, auth: none}]
keys: {pepper: "${PORTCULLIS_KEY_PEPPER}"}
egress:
  run_modes: {default: %s}
  routes:
    - {name: llm, url: "https://api.example.com", test_run: true,
       bulkhead: {max_concurrent: 2, header_priorities: %s}}
    - {name: prod, url: "https://prod.example.com"}
"""


def test_check_warns_when_test_runs_by_default_meet_routes_not_marked_for_them(tmp_path: Path) -> None:
    config = tmp_path / "egress.yaml"
    config.write_text(EGRESS_FLOW % ("test_run", "[low]"))
    code, out = run("check", str(config))
    assert code == 0, out
    assert ("⚠ egress.run_modes.default is test_run, so every call that names no X-Run-Mode is refused (403 "
            "egress.run_mode_denied) on the routes not marked test_run: prod.\n") in out


def test_check_warns_when_a_header_lets_callers_raise_their_class(tmp_path: Path) -> None:
    config = tmp_path / "egress.yaml"
    config.write_text(EGRESS_FLOW % ("full_run", "[critical, low]"))
    code, out = run("check", str(config))
    assert code == 0, out
    assert ("⚠ egress.routes[0] (llm): bulkhead.header_priorities lets any caller raise its class above the default "
            "(normal) to critical with X-Priority, ahead of the workflows and consumers configured with a class.\n") in out


def test_check_says_nothing_of_run_modes_or_classes_that_only_step_aside(tmp_path: Path) -> None:
    config = tmp_path / "egress.yaml"
    config.write_text(EGRESS_FLOW % ("full_run", "[low, bulk]"))
    code, out = run("check", str(config))
    assert code == 0, out
    assert "⚠" not in out
