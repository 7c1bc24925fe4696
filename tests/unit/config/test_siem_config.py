"""The ``audit.siem`` config: the safe choices are the defaults, and the unsafe ones must be spelled out."""

from __future__ import annotations

import pytest

from portcullis.config.loader import load_config_text
from portcullis.config.model import HttpSiemConfig, SyslogSiemConfig
from portcullis.errors import ConfigError

BASE = """
upstreams: {api: {url: "http://127.0.0.1:9"}}
routes: [{name: r, path: /r, upstream: api, auth: none}]
"""


def load(siem: str):  # type: ignore[no-untyped-def]
    return load_config_text(BASE + f"audit: {{siem: [{siem}]}}\n", env={})


def test_sinks_of_both_kinds_are_read_with_safe_defaults() -> None:
    cfg = load('{type: syslog, name: soc, host: siem.example, port: 6514, tls: {ca_file: ca.pem}},'
               ' {type: http, name: lake, url: "https://lake.example/in",'
               ' headers: {Authorization: "Bearer {secret:lake_token}"}}')
    syslog, http = cfg.audit.siem
    assert isinstance(syslog, SyslogSiemConfig) and isinstance(http, HttpSiemConfig)
    assert (syslog.format, syslog.facility, syslog.allow_plaintext, syslog.write_timeout) == ("ocsf", 13, False, 10.0)
    assert http.headers == {"authorization": "Bearer {secret:lake_token}"} and http.format == "ocsf"


@pytest.mark.parametrize(("siem", "complaint"), [
    pytest.param("{type: syslog, name: soc, host: h, port: 514}", "set `tls`", id="syslog-without-tls"),
    pytest.param('{type: http, name: lake, url: "http://lake.example/in"}', "https://", id="http-without-tls"),
    pytest.param('{type: http, name: lake, url: "https://u:p@lake.example/in"}', "credentials",
                 id="credentials-in-the-url"),
    pytest.param('{type: http, name: lake, url: "https://lake.example/", headers: {"x-a": "a\\r\\nx-b: b"}}',
                 "not a valid header", id="header-injection"),
    pytest.param('{type: http, name: lake, url: "https://lake.example/", headers: {x: "{secret:Bad Name}"}}',
                 "secret references", id="malformed-secret-reference"),
    pytest.param("{type: syslog, name: soc, host: h, port: 6514, tls: {ca_file: c, cert_file: c}}", "key_file",
                 id="client-cert-without-key"),
    pytest.param("{type: syslog, name: soc, host: h, port: 1, allow_plaintext: true, app_name: 'a b'}",
                 "APP-NAME", id="app-name-with-a-space"),
    pytest.param("{type: syslog, name: x, host: h, port: 1, allow_plaintext: true},"
                 " {type: syslog, name: x, host: h, port: 2, allow_plaintext: true}", "own name", id="duplicate-name"),
])
def test_an_unsafe_or_malformed_sink_is_refused(siem: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        load(siem)
