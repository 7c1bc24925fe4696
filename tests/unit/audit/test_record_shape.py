"""The audit record's stored shape: every field, plus ``time``, the same instant as ``ts``."""

from __future__ import annotations

import datetime
import typing

import orjson

from portcullis.audit.record import AuditRecord
from portcullis.audit.redact import IDENTIFIER_FIELDS
from portcullis.testing import ManualClock


def test_every_field_reaches_the_sinks_with_an_iso_time_of_the_same_instant() -> None:
    names = list(AuditRecord._fields)
    values = {n: f"v-{n}" for n in names if n not in ("id", "ts")}
    record = AuditRecord.create(clock=ManualClock(), **values)
    stored = orjson.loads(record.to_json_bytes())
    stored_as = {"record_class": "class"}  # the one field stored under another name
    assert set(stored) == {*(stored_as.get(n, n) for n in names), "time"}  # a field that to_dict forgets fails
    assert all(stored[stored_as.get(n, n)] == v for n, v in values.items())
    parsed = datetime.datetime.fromisoformat(stored["time"].replace("Z", "+00:00"))
    assert abs(parsed.timestamp() - stored["ts"]) < 0.001
    assert stored["time"].endswith("Z")


def test_ids_are_unique_and_time_ordered() -> None:
    clock = ManualClock()
    ids = []
    for _ in range(1000):
        ids.append(AuditRecord.create(clock=clock, **{n: None for n in _others()}).id)
        clock.advance(0.001)
    assert len(set(ids)) == 1000
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)


def _others() -> list[str]:
    return [n for n in AuditRecord._fields if n not in ("id", "ts")]


def test_the_iso_time_is_what_datetime_writes_to_the_millisecond() -> None:
    for ts in (0.0, 1_700_000_000.0, 1_700_000_000.9994, 1_700_000_000.9999996, 1_767_225_599.999, 1_767_225_600.0005):
        record = AuditRecord.create(clock=ManualClock(wall=ts), **{n: None for n in _others()})
        expected = datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds")
        assert record.to_dict()["time"] == expected.replace("+00:00", "Z")


def test_a_key_in_any_field_is_masked_unless_the_field_is_an_identifier() -> None:
    # A Portcullis key in every text field at once: free text masks it, identifiers keep it. The
    # text fields are read from the annotations, so a new one is covered without editing this test.
    key = "pcl_abcd1234_" + "S" * 43
    hints = typing.get_type_hints(AuditRecord)
    text = [n for n in _others() if str in (*typing.get_args(hints[n]), hints[n]) or dict in _origins(hints[n])]
    assert {"path", "query", "decision", "user_agent", "egress", "request_id"} <= set(text)
    values: dict[str, object] = {n: None for n in _others()}
    values.update({n: f"x {key} y" for n in text})
    values["egress"] = {"workflow_id": f"x {key} y", "attempts": [f"x {key} y"]}
    stored = orjson.loads(AuditRecord.create(clock=ManualClock(), **values).to_json_bytes())
    for name in text:
        kept = stored["class" if name == "record_class" else name]
        if name in IDENTIFIER_FIELDS:
            assert kept == values[name], name
        else:
            assert "S" * 43 not in str(kept), name


def _origins(hint: object) -> set[object]:
    return {typing.get_origin(a) for a in typing.get_args(hint)} | {typing.get_origin(hint)}


def _egress_record(egress: dict[str, typing.Any]) -> AuditRecord:
    values: dict[str, typing.Any] = {n: None for n in _others()}
    values.update(request_id="r", client_ip="192.0.2.1", method="POST", route="egress", path="/egress/x",
                  status=200, decision="allowed", egress=egress)
    return AuditRecord.create(clock=ManualClock(), **values)


def test_a_secret_anywhere_in_an_egress_record_is_masked_and_the_rest_kept() -> None:
    key = "sk-" + "a1B2" * 12  # an OpenAI key's shape, deep in a list in a nested dict
    egress = {"route": "openai", "llm": {"notes": ["fine", f"leaked {key}"], "tokens": 12}, "host": "api.openai.com"}
    record = _egress_record(egress)
    assert record.egress is not None
    assert key not in orjson.dumps(record.to_dict()).decode()
    assert record.egress["llm"]["notes"][0] == "fine" and record.egress["llm"]["tokens"] == 12
    assert record.egress["host"] == "api.openai.com"


def test_an_egress_record_with_nothing_to_mask_is_stored_exactly_as_given() -> None:
    egress = {"route": "openai", "host": "api.openai.com", "secrets": ["openai_key"], "budget_remaining": {"x": 1.0}}
    record = _egress_record(egress)
    assert record.egress == egress
