"""Config loading: errors name the path, env interpolation is safe, and defaults deny."""

from __future__ import annotations

from pathlib import Path

import pytest

from portcullis.config.loader import MAX_CONFIG_BYTES, load_config, load_config_text
from portcullis.config.model import AuthConfig
from portcullis.errors import ConfigError, ConfigFileError

PEPPER = "p" * 40
BASE = f"""
keys: {{pepper: "{PEPPER}"}}
upstreams: {{api: {{url: "http://127.0.0.1:9000"}}}}
"""


def load(extra: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return load_config_text(BASE + extra, env=env or {})


def error_of(extra: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(extra, env)
    return str(info.value)


def test_a_route_without_auth_requires_an_api_key() -> None:
    cfg = load("routes: [{name: r, path: /r, upstream: api}]")
    assert isinstance(cfg.routes[0].auth, AuthConfig)
    assert cfg.routes[0].auth.api_key is not None
    assert not cfg.routes[0].is_public


def test_a_public_route_must_say_auth_none() -> None:
    cfg = load("routes: [{name: r, path: /r, upstream: api, auth: none}]")
    assert cfg.routes[0].is_public


def test_an_empty_auth_block_is_an_error_not_a_public_route() -> None:
    assert "auth: none" in error_of("routes: [{name: r, path: /r, upstream: api, auth: {}}]")


def test_unknown_keys_are_errors_naming_the_path() -> None:
    message = error_of("routes: [{name: r, path: /r, upstream: api, authz: {scopes_all: [a]}}]")
    assert "routes[0].authz" in message


def test_errors_name_the_nested_path() -> None:
    message = error_of("routes: [{name: r, path: /r, upstream: api, rate_limits: [{name: l, key: ip, rates: [lots]}]}]")
    assert "routes[0].rate_limits[0].rates[0]" in message
    assert "rate such as" in message


def test_an_unknown_upstream_is_an_error() -> None:
    assert "no upstream named 'nope'" in error_of("routes: [{name: r, path: /r, upstream: nope}]")


def test_env_interpolation_fills_values_and_defaults() -> None:
    cfg = load_config_text(
        "keys: {pepper: '${PEP}'}\nupstreams: {api: {url: '${UP:-http://127.0.0.1:7000}'}}\n"
        "routes: [{name: r, path: /r, upstream: api}]",
        env={"PEP": PEPPER},
    )
    assert cfg.keys is not None and cfg.keys.pepper.get_secret_value() == PEPPER
    assert cfg.upstreams["api"].url == "http://127.0.0.1:7000"


def test_a_missing_env_var_names_the_path_and_not_a_value() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text("keys: {pepper: '${MISSING_PEPPER}'}\nupstreams: {}\nroutes: []", env={})
    assert "keys.pepper" in str(info.value) and "MISSING_PEPPER" in str(info.value)


def test_an_env_value_cannot_inject_yaml_structure() -> None:
    cfg = load_config_text(
        "keys: {pepper: '" + PEPPER + "'}\nupstreams: {api: {url: 'http://127.0.0.1:1'}}\n"
        "routes: [{name: r, path: /r, upstream: api, hosts: ['${HOST}']}]",
        env={"HOST": "a.example\n    auth: none"},
    )
    assert not cfg.routes[0].is_public


def test_secret_values_never_appear_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text("keys: {pepper: 'short-secret-value'}\nupstreams: {}\nroutes: [{name: r, path: /r, upstream: x}]")
    assert "short-secret-value" not in str(info.value)
    assert "keys.pepper" in str(info.value)


@pytest.mark.parametrize(("snippet", "expected"), [
    pytest.param("cors: {allow_origins: ['*'], allow_credentials: true}", "credentialed", id="credentialed-wildcard-cors"),
    pytest.param("cors: {allow_origins: ['https://a.example/path']}", "no path", id="origin-with-path"),
    pytest.param("path: '/a/../b'", "path template", id="dot-segments-in-template"),
    pytest.param("path: '/a/{rest:path}/b'", "last segment", id="path-param-not-last"),
])
def test_insecure_or_ambiguous_route_settings_are_refused(snippet: str, expected: str) -> None:
    route = "{name: r, path: /r, upstream: api, " + snippet + "}" if not snippet.startswith("path") else \
        "{name: r, upstream: api, " + snippet + "}"
    assert expected in error_of(f"routes: [{route}]")


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_the_none_algorithm_is_refused_in_any_spelling(alg: str) -> None:
    message = error_of(f"""
jwt_issuers: [{{name: idp, issuer: i, audiences: [a], algorithms: [{alg}], keys: [{{kty: oct}}]}}]
routes: [{{name: r, path: /r, upstream: api, auth: {{jwt: {{}}}}}}]
""")
    assert "none" in message


def test_hmac_and_asymmetric_algorithms_cannot_mix() -> None:
    message = error_of("""
jwt_issuers: [{name: idp, issuer: i, audiences: [a], algorithms: [RS256, HS256], jwks_uri: "https://idp/jwks"}]
routes: [{name: r, path: /r, upstream: api, auth: {jwt: {}}}]
""")
    assert "both HMAC" in message


def test_plain_http_jwks_needs_an_explicit_opt_in() -> None:
    message = error_of("""
jwt_issuers: [{name: idp, issuer: i, audiences: [a], algorithms: [RS256], jwks_uri: "http://idp/jwks"}]
routes: [{name: r, path: /r, upstream: api, auth: {jwt: {}}}]
""")
    assert "https" in message


def test_api_key_routes_need_a_pepper() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text("upstreams: {api: {url: 'http://127.0.0.1:1'}}\nroutes: [{name: r, path: /r, upstream: api}]")
    assert "keys.pepper" in str(info.value)


@pytest.mark.parametrize("name", ["quickstart.yaml", "reference.yaml", "several-instances.yaml"])
def test_shipped_examples_are_valid(name: str) -> None:
    path = Path(__file__).resolve().parents[3] / "examples" / name
    cfg = load_config(path, env={"PORTCULLIS_KEY_PEPPER": PEPPER, "IDP_HS_SECRET": "s" * 40})
    assert cfg.routes


def test_units_are_converted_at_load() -> None:
    cfg = load("""
listen: {max_header_bytes: 8KiB, graceful_timeout: 1m}
routes: [{name: r, path: /r, upstream: api, request: {max_body_bytes: 2MiB},
          rate_limits: [{name: l, key: ip, rates: ["10/second", "20/10s", "5000/hour"]}]}]
""")
    assert cfg.listen.max_header_bytes == 8192
    assert cfg.listen.graceful_timeout == 60.0
    assert cfg.routes[0].request.max_body_bytes == 2 * 1024 * 1024
    assert [(r.limit, r.window_s) for r in cfg.routes[0].rate_limits[0].rates] == [(10, 1.0), (20, 10.0), (5000, 3600.0)]


# --- the file itself: size, encoding, values grown through ${ENV} --------------------------------

def test_a_file_over_16_mib_is_refused_in_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"# " + b"x" * MAX_CONFIG_BYTES + b"\n")
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: refused: larger than 16 MiB"


def test_a_single_50_mb_string_is_refused_by_the_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "string.yaml"
    path.write_bytes(b"routes: '" + b"a" * 50_000_000 + b"'\n")
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    assert "larger than 16 MiB" in str(info.value)


def test_an_oversized_value_in_a_file_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "value.yaml"
    path.write_text(BASE + "routes: [{name: r, path: /r, upstream: api, hosts: ['" + "h" * 70_000 + "']}]\n")
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    assert str(info.value) == f"{path}, line 4, column 53: refused: a value longer than 64 KiB"


def test_a_non_utf8_file_is_one_error_naming_the_file_line_and_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\nupstreams: {api: {url: 'http://caf\xe9'}}\n")
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    assert str(info.value) == f"{path}, line 2: not UTF-8 text (byte 0xe9 at byte offset 45)"


def test_an_env_value_cannot_grow_a_value_past_64_kib() -> None:
    message = error_of("routes: [{name: r, path: /r, upstream: api, hosts: ['${BIG}']}]", env={"BIG": "h" * 70_000})
    assert message == "routes[0].hosts[0]: refused: longer than 64 KiB after ${ENV} interpolation"


def test_an_error_in_one_of_many_routes_names_that_route() -> None:
    routes = ", ".join(f"{{name: r{i}, path: /r{i}, upstream: api}}" for i in range(50))
    message = error_of(f"routes: [{routes}, {{name: bad, path: /bad, upstream: api, colour: blue}}]")
    assert message == "routes[50].colour: Extra inputs are not permitted"


def test_a_route_streams_its_body_only_when_it_says_so() -> None:
    cfg = load("routes: [{name: up, path: /up, upstream: api, request: {body_buffering: streamed}},"
               " {name: r, path: /r, upstream: api}]")
    assert [r.request.body_buffering for r in cfg.routes] == ["streamed", None]  # None: buffered


@pytest.mark.parametrize(("extra", "where"), [
    pytest.param("routes: [{name: up, path: /up, upstream: api, request: {body_buffering: streamed, json: {}}}]",
                 "routes[0].request", id="streamed-and-json-on-the-route"),
    pytest.param("request: {json: {}}\nroutes: [{name: up, path: /up, upstream: api, "
                 "request: {body_buffering: streamed}}]", "routes[0].request.body_buffering",
                 id="streamed-route-under-global-json"),
])
def test_a_streamed_body_cannot_be_validated_as_json(extra: str, where: str) -> None:
    error = error_of(extra)
    assert where in error
    assert "cannot be validated as JSON before it is forwarded" in error
