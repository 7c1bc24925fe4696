"""The audit record's stored shape: every field, plus ``time``, the same instant as ``ts``."""

from __future__ import annotations

import dataclasses
import datetime

import orjson

from portcullis.audit.record import AuditRecord
from portcullis.testing import ManualClock


def test_every_field_reaches_the_sinks_with_an_iso_time_of_the_same_instant() -> None:
    names = [f.name for f in dataclasses.fields(AuditRecord)]
    values = {n: f"v-{n}" for n in names if n not in ("id", "ts")}
    record = AuditRecord.create(clock=ManualClock(), **values)
    stored = orjson.loads(record.to_json_bytes())
    assert set(stored) == {*names, "time"}  # a new field that to_dict forgets fails here
    assert all(stored[n] == v for n, v in values.items())
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
    return [f.name for f in dataclasses.fields(AuditRecord) if f.name not in ("id", "ts")]


def test_the_iso_time_is_what_datetime_writes_to_the_millisecond() -> None:
    for ts in (0.0, 1_700_000_000.0, 1_700_000_000.9994, 1_700_000_000.9999996, 1_767_225_599.999, 1_767_225_600.0005):
        record = AuditRecord.create(clock=ManualClock(wall=ts), **{n: None for n in _others()})
        expected = datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds")
        assert record.to_dict()["time"] == expected.replace("+00:00", "Z")
