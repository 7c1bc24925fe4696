"""Schemathesis against a real ``portcullis serve``: the admin API does what its OpenAPI document says.

Every operation is called with generated data (valid and invalid) and an admin token of the
widest operator role; schemathesis's checks then hold each answer against the document: no 5xx,
only documented status codes and content types, bodies that match their schemas, malformed input
refused. The gateway runs as operators run it (its own process, a real socket, SQLite), so the
generated requests go through uvicorn, the authentication middleware and the routes exactly as an
operator's would. Bounded: a fixed number of examples per operation, all to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from tests.cluster import mint_admin_token, serving
from tests.conftest import PEPPER

from portcullis.vault.vault import generate_master_key

_EXAMPLES = 25


def _config(tmp: Path) -> str:
    return f"""
version: 1
listen: {{host: 127.0.0.1, port: 0}}
admin: {{host: 127.0.0.1, port: 0, failed_auth: {{max_failures: 1000000}}}}  # schemathesis also tries no auth
keys: {{pepper: "{PEPPER}"}}
store: {{url: "sqlite:///{tmp / 'schemathesis.db'}"}}
audit: {{file: "{tmp / 'audit.jsonl'}", spill_file: "{tmp / 'audit.spill'}"}}
upstreams: {{api: {{url: "http://127.0.0.1:9"}}}}
routes: [{{name: open, path: "/open", upstream: api, auth: none}}]
egress:
  routes:
    - {{name: partner, url: "http://127.0.0.1:9", allow_http: true, allow_networks: [127.0.0.0/8]}}
"""


class Served:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def served_admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    config = tmp / "portcullis.yaml"
    config.write_text(_config(tmp))
    with serving(config, env={"PORTCULLIS_SECRET_KEY": generate_master_key()}) as (_, admin):
        token = asyncio.run(mint_admin_token(config))
        assert token is not None
        yield Served(admin, token)


def test_every_admin_operation_answers_as_documented(served_admin: Served) -> None:
    # The operations are walked here rather than with schemathesis's pytest plugin, which does not
    # run under this pytest; each one gets its own bounded hypothesis run.
    document = requests.get(served_admin.base + "/openapi.json", headers=served_admin.headers, timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    failures: dict[str, str] = {}
    statuses: dict[str, set[int]] = {}
    for operation in operations:
        try:
            _exercise(operation, served_admin, statuses.setdefault(operation.label, set()))
        except Exception as exc:  # every operation's failure is collected and reported
            failures[operation.label] = str(exc)[:2000]
    assert failures == {}
    # Each operation was reached past authentication at least once (not only refused or throttled).
    assert {label for label, seen in statuses.items() if seen - {401, 429}} == {op.label for op in operations}


def _exercise(operation: Any, served: Served, seen: set[int]) -> None:
    # An opaque pagination cursor can match its documented pattern and still be one the API never
    # handed out (400): for those operations only, schema-valid input may be refused.
    takes_cursor = any(p.name == "cursor" for p in operation.query)
    excluded = [schemathesis.checks.positive_data_acceptance] if takes_cursor else []

    @given(case=operation.as_strategy())
    @settings(max_examples=_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def call(case: Any) -> None:
        seen.add(case.call_and_validate(base_url=served.base, headers=served.headers, timeout=10,
                                        excluded_checks=excluded).status_code)

    call()
