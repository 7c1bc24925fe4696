"""Validation of OCSF events against the published schema, offline, for the tests.

The schema is the OCSF release ``portcullis.audit.ocsf.OCSF_VERSION`` as the ``ocsf-json-schema``
package ships it (no network at test time); that package turns a class into a JSON Schema (draft
2020-12, ``additionalProperties: false`` on every object with properties, the classes' ``at least
one of`` constraints included) and ``jsonschema-rs`` checks an event against it. No profiles are
applied: the events use none.
"""

from __future__ import annotations

import functools
from typing import Any

import jsonschema_rs
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema  # type: ignore[import-untyped]

from portcullis.audit.ocsf import OCSF_VERSION

# Read when the tests are collected, not inside an event loop (it reads a file of a few MiB).
_SCHEMA = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=OCSF_VERSION))


@functools.cache
def _validator(class_uid: int) -> Any:
    schema = _SCHEMA
    name = schema.lookup_class_name_from_uid(class_uid=class_uid)
    return jsonschema_rs.validator_for(schema.get_class_schema(class_name=name, profiles=[]))


def ocsf_errors(event: dict[str, Any]) -> list[str]:
    """What is wrong with ``event`` under its class's schema (empty: valid)."""
    class_uid = event.get("class_uid")
    if not isinstance(class_uid, int):
        return ["class_uid: missing or not an integer"]
    try:
        validator = _validator(class_uid)
    except (KeyError, ValueError):
        return [f"class_uid: {class_uid} is no class of OCSF {OCSF_VERSION}"]
    return [f"{'/'.join(map(str, e.instance_path)) or '(event)'}: {e.message}" for e in validator.iter_errors(event)]
