"""``audit.ocsf``: the schema check catches broken events, and hostile record values stay inside their field.

The valid events of every class, from real gateway traffic, are in
``tests/integration/test_audit_ocsf.py``; these tests prove the validator used there actually
checks, and that what a client controls (path, query, user agent) cannot forge an OCSF field.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from tests.audit_trail import record
from tests.ocsf_schema import ocsf_errors

from portcullis.audit.ocsf import MAX_TEXT, to_ocsf
from portcullis.audit.security_event import security_event
from portcullis.testing import ManualClock


def _events(**fields: Any) -> list[dict[str, Any]]:
    return to_ocsf(record(ManualClock(), 1, **fields).to_dict())


def _http() -> dict[str, Any]:
    [http, _auth] = _events()
    return http


def test_a_served_request_is_valid_http_activity_and_authentication() -> None:
    http, auth = _events()
    assert ocsf_errors(http) == [] and ocsf_errors(auth) == []
    assert (http["class_uid"], http["type_uid"], auth["class_uid"], auth["status_id"]) == (4002, 400203, 3002, 1)


def _without(key: str) -> dict[str, Any]:
    event = _http()
    del event[key]
    return event


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    event = copy.deepcopy(_http())
    target = event
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return event


@pytest.mark.parametrize(("event", "complaint"), [
    pytest.param(_without("metadata"), '"metadata" is a required property', id="required-attribute-missing"),
    pytest.param(_without("severity_id"), '"severity_id" is a required property', id="severity-missing"),
    pytest.param(_with(("time",), "2026-01-01T00:00:00Z"), "is not of type", id="time-not-an-integer"),
    pytest.param(_with(("severity_id",), 42), "is not one of", id="severity-outside-its-enum"),
    pytest.param(_with(("http_request", "http_method"), "BREW"), "is not one of", id="method-outside-its-enum"),
    pytest.param(_with(("src_endpoint", "ip"), "not-an-address"), "does not match", id="ip-not-an-address"),
    pytest.param(_with(("forged",), True), "Additional properties are not allowed", id="unknown-attribute"),
    pytest.param(_with(("metadata", "product"), {}), "is not valid under any of the schemas", id="product-unnamed"),
    pytest.param({k: v for k, v in _http().items() if k not in ("http_request", "http_response")},
                 "is not valid under any of the schemas", id="http-activity-without-request-or-response"),
])
def test_a_broken_event_fails_validation(event: dict[str, Any], complaint: str) -> None:
    errors = ocsf_errors(event)
    assert any(complaint in e for e in errors), errors


def test_an_unknown_class_fails_validation() -> None:
    assert ocsf_errors({**_http(), "class_uid": 4999}) == ["class_uid: 4999 is no class of OCSF 1.8.0"]


@pytest.mark.parametrize("hostile", [
    pytest.param('/x","severity_id":1,"forged":"', id="json-quote-breakout"),
    pytest.param("/x\n{\"class_uid\":2004}\n", id="newline-second-event"),
    pytest.param("/x\r\n99 <14>1 - - - - - forged", id="syslog-frame-forgery"),
    pytest.param("/x\x00\x1b[2J\x7f\u2028", id="control-characters"),
])
def test_client_chosen_values_stay_inside_their_field(hostile: str) -> None:
    http, _auth = _events(path=hostile, user_agent=hostile, query=hostile)
    line = orjson.dumps(http)
    assert b"\n" not in line and b"\r" not in line and b"\x00" not in line  # one event, one line
    back = orjson.loads(line)
    assert back == http and ocsf_errors(back) == []
    assert back["http_request"]["url"]["path"] == hostile and back["http_request"]["user_agent"] == hostile
    assert "forged" not in back and back["class_uid"] == 4002


def test_a_huge_path_is_cut_to_a_bounded_field() -> None:
    http, _auth = _events(path="/" + "a" * 100_000, user_agent="u" * 100_000)
    assert len(http["http_request"]["url"]["path"]) == MAX_TEXT and http["http_request"]["url"]["path"][-1] == "…"
    assert len(orjson.dumps(http)) < 4 * MAX_TEXT + 4096
    assert ocsf_errors(http) == []


def test_a_secret_in_a_path_is_masked_before_it_reaches_an_event() -> None:
    key = "pcl_k1a2b3_" + "A1b2C3d4" * 4  # the gateway's own API key shape
    http, _auth = _events(path=f"/orders/{key}", user_agent=f"Bearer {key}")
    assert key not in orjson.dumps(http).decode()


def test_a_checkpoint_is_no_event() -> None:
    assert to_ocsf({"kind": "checkpoint", "chain": "x/request", "seq": 10, "hash": "00"}) == []


@pytest.mark.parametrize(("action", "verb", "activity_id"), [
    ("key.create", "Create", 1), ("audit.export", "Read", 2), ("key.rotate", "Update", 3), ("key.revoke", "Delete", 4),
    ("config.reload", "Update", 3), ("something.new", "Other", 99),
])
def test_a_security_event_is_api_activity_by_its_verb(action: str, verb: str, activity_id: int) -> None:
    row = security_event(clock=ManualClock(), action=action, outcome="ok", actor="cli:ops", role=None, target="k1",
                         client_ip="local", request_id="r1", status=0).to_dict()
    [event] = to_ocsf(row)
    assert (event["class_uid"], event["activity_id"], event["activity_name"]) == (6003, activity_id, verb)
    assert event["src_endpoint"] == {"name": "local"} and event["actor"]["user"]["uid"] == "cli:ops"
    assert ocsf_errors(event) == []


def test_a_trace_id_becomes_the_correlation_uid_else_the_request_id() -> None:
    row = record(ManualClock(), 1).to_dict()
    [http, _auth] = to_ocsf(row)
    assert http["metadata"]["correlation_uid"] == "req-1"
    [traced, _auth] = to_ocsf({**row, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"})
    assert traced["metadata"]["correlation_uid"] == "4bf92f3577b34da6a3ce929d0e0e4736"
