"""Audit records as OCSF events (Open Cybersecurity Schema Framework, schema ``OCSF_VERSION``).

Why a mapping of our own: a SIEM (Splunk, Sentinel, Security Lake, Elastic, Chronicle) reads OCSF
without a parser per product, so an export or a stream in OCSF lands in the analyst's existing
searches. The mapping is a pure function of one stored record (the mapping that sinks receive and
that ``audit export`` reads back), so the export, the streaming sinks and the tests use one copy.

Which class a record becomes (``docs/audit.md`` has the same table):

============================================  ===================================================
record                                        OCSF class
============================================  ===================================================
``request`` record (ingress or egress call)   HTTP Activity (4002), activity = the HTTP method
  ... whose decision is ``auth_failed:*``     Authentication (3002), Logon, status Failure
  ... that carries a consumer or key id       also Authentication (3002), Logon, status Success
``security`` event ``admin.auth``             Authentication (3002), Logon, status Failure
``security`` event ``anomaly.detected``       Detection Finding (2004), Create
any other ``security`` event                  API Activity (6003), Create/Read/Update/Delete by
                                              the action's verb (``key.create``, ``key.revoke``…)
checkpoint line (``"kind": "checkpoint"``)    nothing: it seals the chain, it is not an event
============================================  ===================================================

Where the fields go (every class):

- ``time`` ← ``ts`` in milliseconds; ``metadata.uid`` ← ``id``; ``metadata.log_name`` ← ``class``;
  ``metadata.correlation_uid`` ← ``trace_id`` when the record has one, else ``request_id``;
  ``metadata.product`` = Portcullis and its version; ``metadata.version`` = ``OCSF_VERSION``.
- ``status_id`` 1 Success / 2 Failure from ``status`` (below 400, or an ``ok`` outcome), 0 when
  there is no status; ``status_code`` ← ``status``; ``status_detail`` ← ``decision``.
- ``severity_id``: 1 Informational for successes, 2 Low for refusals (4xx), 3 Medium for server
  failures (5xx) and authentication failures, 4 High for an ``auth_failure_spike`` detection.
- ``src_endpoint.ip`` ← ``client_ip`` (``name`` instead when it is not an address: ``local``,
  ``in-process``, ``gateway``).
- ``http_request`` ← ``method``, ``path``, ``query``, ``user_agent``, ``request_id`` (``uid``),
  ``bytes_in`` (``length``); ``http_response`` ← ``status``, ``bytes_out``, ``latency_ms``.
- HTTP Activity: ``dst_endpoint`` ← the egress ``host`` (egress) or ``svc_name`` ← the route
  (ingress). The class has no ``actor`` without profiles, so who called is in ``unmapped`` and in
  the Authentication event beside it.
- API Activity: ``api.operation`` ← ``event.action``; ``actor.user.uid`` ← ``event.actor``;
  ``actor.user.type`` ← ``event.role``; ``resources[0].uid`` ← ``event.target``.
- Authentication: ``user.uid`` ← consumer id (else the key id), ``user.credential_uid`` ← key id
  (ingress), or ``user.name`` ``anonymous`` (admin); ``service.name``
  ← the route or ``portcullis-admin``; ``auth_protocol`` ``api_key`` when a key id is known.
- Detection Finding: ``finding_info.uid`` ← ``id``, ``title`` ← ``<kind> on <subject>``,
  ``types`` ← [kind], ``analytic`` = the Portcullis baseline detector; observed and expected
  values in ``unmapped``.
- ``unmapped.portcullis``: what has no OCSF home and an auditor needs: ``chain``, ``seq`` and
  ``hash`` (to tie the event to the sealed record), ``class``, ``decision``, ``route``,
  ``consumer_id``, ``key_id``, and the
  ``egress`` and ``event`` details.

Secrets: a record is masked when it is made (``AuditRecord.create`` runs every free-text field,
and the nested ``egress`` and ``event`` details, through ``audit.redact``); the identifiers it keeps
(key ids, consumer ids) are names, not credentials. So the mapping copies fields as they are and
adds no raw form of its own (``raw_data`` stays empty: it would only repeat the record).

Injection: the event is a JSON object serialised by orjson, so a newline, quote or control
character in a path or header is escaped inside its string and cannot end a field or start
another. Strings longer than ``MAX_TEXT`` characters are cut (with ``…`` at the end) so one huge
path cannot make an event a SIEM refuses.

What it refuses to do: validate (tests do that against the published schema with a library, so
the runtime needs none) or decide what may be exported (callers authorise).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from portcullis import __version__

__all__ = ["MAX_TEXT", "OCSF_VERSION", "PRODUCT", "to_ocsf", "to_ocsf_all"]

OCSF_VERSION = "1.8.0"
PRODUCT = {"name": "Portcullis", "vendor_name": "Portcullis", "version": __version__}
MAX_TEXT = 4096

_HTTP_ACTIVITY, _API_ACTIVITY, _AUTHENTICATION, _DETECTION_FINDING = 4002, 6003, 3002, 2004
_CATEGORY = {_HTTP_ACTIVITY: 4, _API_ACTIVITY: 6, _AUTHENTICATION: 3, _DETECTION_FINDING: 2}
_CLASS_NAME = {
    _HTTP_ACTIVITY: "HTTP Activity", _API_ACTIVITY: "API Activity", _AUTHENTICATION: "Authentication",
    _DETECTION_FINDING: "Detection Finding",
}
_CATEGORY_NAME = {4: "Network Activity", 6: "Application Activity", 3: "Identity & Access Management", 2: "Findings"}
# HTTP Activity's activity_id per method (OCSF http_activity.activity_id); anything else is 99 Other.
_HTTP_METHODS = {"CONNECT": 1, "DELETE": 2, "GET": 3, "HEAD": 4, "OPTIONS": 5, "POST": 6, "PUT": 7, "TRACE": 8,
                 "PATCH": 9}
# API Activity's activity_id by the verb that ends a security event's action (``key.create``).
_API_VERBS = {
    "create": 1, "bootstrap": 1, "put": 1, "force": 3, "read": 2, "search": 2, "export": 2, "verify": 2,
    "rotate": 3, "rotate_master": 3, "reset": 3, "reload": 3, "enable": 3, "disable": 3, "enforced": 3,
    "revoke": 4, "delete": 4, "lift": 4, "expire": 4,
}
_LOGON = 1
_SUCCESS, _FAILURE = 1, 2
_INFORMATIONAL, _LOW, _MEDIUM, _HIGH = 1, 2, 3, 4
_OK_OUTCOMES = frozenset({"ok", "success", "allowed"})


def to_ocsf_all(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every event of ``rows`` in order (a record may give two events, a checkpoint none)."""
    return [event for row in rows for event in to_ocsf(row)]


def to_ocsf(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The OCSF events of one stored record; see the module docstring for the mapping."""
    if row.get("kind") == "checkpoint":
        return []
    event = row.get("event") if isinstance(row.get("event"), dict) else None
    if row.get("class") == "security" or event is not None:
        action = str((event or {}).get("action", ""))
        if action == "admin.auth":
            return [_authentication(row, success=False, admin=True)]
        if action == "anomaly.detected":
            return [_detection(row, event or {})]
        return [_api_activity(row, event or {}, action)]
    decision = str(row.get("decision", ""))
    if decision.startswith("auth_failed:"):
        return [_authentication(row, success=False, admin=False)]
    events = [_http_activity(row)]
    if row.get("consumer_id") or row.get("key_id"):
        events.append(_authentication(row, success=True, admin=False))
    return events


def _base(row: Mapping[str, Any], class_uid: int, activity_id: int, activity_name: str, *, severity_id: int,
          status_id: int | None) -> dict[str, Any]:
    category = _CATEGORY[class_uid]
    metadata: dict[str, Any] = {
        "version": OCSF_VERSION, "product": dict(PRODUCT), "uid": _text(row.get("id", "")),
        "log_name": _text(row.get("class", "request")),
    }
    correlation = row.get("trace_id") or row.get("request_id")
    if correlation:
        metadata["correlation_uid"] = _text(correlation)
    out: dict[str, Any] = {
        "class_uid": class_uid, "class_name": _CLASS_NAME[class_uid], "category_uid": category,
        "category_name": _CATEGORY_NAME[category], "activity_id": activity_id, "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id, "type_name": f"{_CLASS_NAME[class_uid]}: {activity_name}",
        "time": round(float(row.get("ts", 0.0)) * 1000), "severity_id": severity_id,
        "severity": _SEVERITY_NAME[severity_id], "metadata": metadata,
    }
    if status_id is not None:
        out["status_id"] = status_id
        out["status"] = _STATUS_NAME[status_id]
    status = row.get("status")
    if isinstance(status, int) and status > 0:
        out["status_code"] = str(status)
    if row.get("decision"):
        out["status_detail"] = _text(row["decision"])
    out["unmapped"] = {"portcullis": _unmapped(row)}
    return out


_SEVERITY_NAME = {_INFORMATIONAL: "Informational", _LOW: "Low", _MEDIUM: "Medium", _HIGH: "High"}
_STATUS_NAME = {0: "Unknown", _SUCCESS: "Success", _FAILURE: "Failure"}


def _http_outcome(row: Mapping[str, Any]) -> tuple[int, int]:
    """(status_id, severity_id) from the HTTP status the client saw."""
    status = row.get("status")
    if not isinstance(status, int) or status <= 0:
        return 0, _INFORMATIONAL
    if status < 400:
        return _SUCCESS, _INFORMATIONAL
    return _FAILURE, (_LOW if status < 500 else _MEDIUM)


def _http_activity(row: Mapping[str, Any]) -> dict[str, Any]:
    method = str(row.get("method", "")).upper()
    activity_id = _HTTP_METHODS.get(method, 99)
    status_id, severity_id = _http_outcome(row)
    out = _base(row, _HTTP_ACTIVITY, activity_id, method.title() if activity_id != 99 else "Other",
                severity_id=severity_id, status_id=status_id)
    out["http_request"] = _http_request(row)
    response = _http_response(row)
    if response is not None:
        out["http_response"] = response
    out["src_endpoint"] = _endpoint(row.get("client_ip"))
    egress = row.get("egress") if isinstance(row.get("egress"), dict) else None
    if egress is not None and egress.get("host"):
        out["dst_endpoint"] = {"hostname": _text(egress["host"])}
    elif row.get("route"):
        out["dst_endpoint"] = {"svc_name": _text(row["route"])}
    return out


def _authentication(row: Mapping[str, Any], *, success: bool, admin: bool) -> dict[str, Any]:
    status_id = _SUCCESS if success else _FAILURE
    out = _base(row, _AUTHENTICATION, _LOGON, "Logon", severity_id=_INFORMATIONAL if success else _MEDIUM,
                status_id=status_id)
    out["user"] = _principal(row) or {"name": "anonymous"}
    out["service"] = {"name": "portcullis-admin" if admin else _text(row.get("route") or "portcullis")}
    out["src_endpoint"] = _endpoint(row.get("client_ip"))
    out["http_request"] = _http_request(row)
    if row.get("key_id"):
        out["auth_protocol_id"], out["auth_protocol"] = 99, "api_key"
    else:
        out["auth_protocol_id"] = 0
    out["is_remote"] = True
    return out


def _api_activity(row: Mapping[str, Any], event: Mapping[str, Any], action: str) -> dict[str, Any]:
    verb = action.rsplit(".", 1)[-1]
    activity_id = _API_VERBS.get(verb, 99)
    outcome = str(event.get("outcome", ""))
    status = row.get("status")
    failed = (isinstance(status, int) and status >= 400) or (outcome not in _OK_OUTCOMES and outcome != "")
    status_id = _FAILURE if failed else _SUCCESS
    severity_id = _INFORMATIONAL if not failed else (_MEDIUM if isinstance(status, int) and status >= 500 else _LOW)
    out = _base(row, _API_ACTIVITY, activity_id, _API_NAMES.get(activity_id, "Other"), severity_id=severity_id,
                status_id=status_id)
    user: dict[str, Any] = {"uid": _text(event.get("actor") or "anonymous")}
    if event.get("role"):
        user["type_id"], user["type"] = 99, _text(event["role"])
    out["actor"] = {"user": user, "app_name": "portcullis"}
    out["api"] = {"operation": _text(action or "unknown"), "service": {"name": "portcullis-admin"}}
    out["src_endpoint"] = _endpoint(row.get("client_ip"))
    if event.get("target"):
        out["resources"] = [{"uid": _text(event["target"])}]
    if row.get("method") or row.get("path"):
        out["http_request"] = _http_request(row)
    response = _http_response(row)
    if response is not None:
        out["http_response"] = response
    return out


_API_NAMES = {1: "Create", 2: "Read", 3: "Update", 4: "Delete"}


def _detection(row: Mapping[str, Any], event: Mapping[str, Any]) -> dict[str, Any]:
    kind = _text(event.get("outcome") or "anomaly")
    subject = _text(event.get("target") or "")
    severity_id = _HIGH if kind == "auth_failure_spike" else _MEDIUM
    out = _base(row, _DETECTION_FINDING, 1, "Create", severity_id=severity_id, status_id=None)
    out["finding_info"] = {
        "uid": _text(row.get("id", "")), "title": f"{kind} on {subject}" if subject else kind, "types": [kind],
        "created_time": out["time"],
        "analytic": {"name": "portcullis-baseline", "type_id": 1, "type": "Rule",
                     "desc": "Per-window departure from the route's or consumer's baseline."},
        "desc": f"observed {event.get('observed')}, expected {event.get('expected')}",
    }
    out["status_id"], out["status"] = 1, "New"
    out["is_alert"] = True
    return out


def _http_request(row: Mapping[str, Any]) -> dict[str, Any]:
    request: dict[str, Any] = {}
    method = str(row.get("method", "")).upper()
    if method in _HTTP_METHODS:
        request["http_method"] = method
    url: dict[str, Any] = {}
    if row.get("path"):
        url["path"] = _text(row["path"])
    if row.get("query"):
        url["query_string"] = _text(row["query"])
    if url:
        request["url"] = url
    if row.get("user_agent"):
        request["user_agent"] = _text(row["user_agent"])
    if row.get("request_id"):
        request["uid"] = _text(row["request_id"])
    if isinstance(row.get("bytes_in"), int):
        request["length"] = row["bytes_in"]
    return request


def _http_response(row: Mapping[str, Any]) -> dict[str, Any] | None:
    status = row.get("status")
    if not isinstance(status, int) or status <= 0:
        return None
    response: dict[str, Any] = {"code": status}
    if isinstance(row.get("bytes_out"), int):
        response["length"] = row["bytes_out"]
    latency = row.get("latency_ms")
    if isinstance(latency, int | float) and latency > 0:
        response["latency"] = round(latency)
    return response


def _principal(row: Mapping[str, Any]) -> dict[str, Any] | None:
    consumer, key = row.get("consumer_id"), row.get("key_id")
    if not consumer and not key:
        return None
    user: dict[str, Any] = {"uid": _text(consumer or key)}
    if key:
        user["credential_uid"] = _text(key)
    return user


def _endpoint(address: Any) -> dict[str, Any]:
    text = str(address or "")
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return {"name": _text(text or "unknown")}
    return {"ip": text}


def _unmapped(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in ("chain", "seq", "hash", "class", "decision", "route", "consumer_id", "key_id"):
        value = row.get(field)
        if value is not None:
            out[field] = _text(value) if isinstance(value, str) else value
    for field in ("egress", "event"):
        value = row.get(field)
        if isinstance(value, dict):
            out[field] = _bounded(value)
    return out


def _bounded(value: Any) -> Any:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_text(str(k)): _bounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_bounded(v) for v in value]
    return value


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
