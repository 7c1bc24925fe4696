"""check_json: what a JSON body may look like before it reaches an upstream."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portcullis.policies.stage5_validate.json_guard import check_json

FORBIDDEN = frozenset({"__proto__", "constructor", "prototype"})


def check(
    body: bytes, *, max_depth: int = 32, max_keys: int = 1000, forbidden: frozenset[str] = FORBIDDEN
) -> str | None:
    return check_json(body, max_depth=max_depth, max_keys=max_keys, forbidden_keys=forbidden)


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b"[]",
        b'"a plain string"',
        b"42",
        b"null",
        b' \n{"a": 1}\n ',
        b'{"created_at": "2024-01-01T12:00:00Z", "url": "https://example.com:8443/a"}',
        b'{"key:with:colons": "value:with:colons", "other": ":"}',
        b'{"escaped": "\\u003a\\u003A", "plain": "a:b"}',
        '{"名前": "値", "emoji": "😀"}'.encode(),
        b'{"proto": 1, "__proto": 2, "prototypes": 3, "Constructor": 4}',
        b'{"path": "constructor.prototype.polluted"}',
        b'[{"a": 1}, {"a": 2}, {"a": 3}]',
        b'{"a": {"a": {"a": 1}}}',
        b"[18446744073709551616, 1e308, -0.0, 1e-400]",
    ],
    ids=[
        "empty-object", "empty-array", "scalar-string", "scalar-number", "null", "surrounding-whitespace",
        "colons-in-values", "colons-in-keys", "escaped-colons-without-duplicates", "unicode",
        "near-miss-key-names", "forbidden-name-as-value", "same-key-in-sibling-objects",
        "same-key-at-different-depths", "large-and-tiny-numbers",
    ],
)
def test_well_formed_bounded_documents_pass(body: bytes) -> None:
    assert check(body) is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"{}x",
        b"{'a': 1}",
        b"NaN",
        b"[Infinity]",
        b"[1e400]",
        b"\xef\xbb\xbf{}",
        b'{"a": "\xff"}',
        b'"\\ud800"',
        b'{"a": "line\nbreak"}',
        b"[1, 2,]",
        '{"a": 1}'.encode("utf-16"),
    ],
    ids=[
        "empty", "truncated", "trailing-garbage", "single-quotes", "nan", "infinity", "overflowing-number",
        "utf8-bom", "invalid-utf8", "lone-surrogate", "raw-control-character", "trailing-comma", "utf16",
    ],
)
def test_anything_but_strict_json_is_invalid(body: bytes) -> None:
    assert check(body) == "invalid_json"


def nested(depth: int, *, leaf: bytes = b"1") -> bytes:
    return b'{"a":' * depth + leaf + b"}" * depth


@pytest.mark.parametrize(("depth", "expected"), [(1, None), (5, None), (6, "too_deep")])
def test_depth_counts_nested_objects_up_to_the_limit(depth: int, expected: str | None) -> None:
    assert check(nested(depth), max_depth=5) == expected


def test_depth_counts_arrays_too() -> None:
    assert check(b"[[[[1]]]]", max_depth=4) is None
    assert check(b"[[[[[1]]]]]", max_depth=4) == "too_deep"


def test_depth_counts_mixed_containers() -> None:
    assert check(b'[{"a": [{"b": 1}]}]', max_depth=4) is None
    assert check(b'[{"a": [{"b": []}]}]', max_depth=4) == "too_deep"


def test_deeply_nested_empty_containers_count_as_depth() -> None:
    assert check(b"[" * 33 + b"]" * 33) == "too_deep"


def test_nesting_beyond_what_orjson_parses_is_too_deep_not_invalid() -> None:
    assert check(b"[" * 2000 + b"]" * 2000) == "too_deep"


def test_unterminated_deep_nesting_is_too_deep() -> None:
    assert check(b"[" * 5000) == "too_deep"


def test_a_deep_branch_anywhere_is_found() -> None:
    wide = b'{"x": [1, 2, {"y": 3}], "deep": ' + nested(40) + b', "z": 1}'
    assert check(wide) == "too_deep"


@pytest.mark.parametrize(("keys", "expected"), [(10, None), (11, "too_many_keys")])
def test_keys_are_counted_across_the_whole_document(keys: int, expected: str | None) -> None:
    objects = [{f"k{i}": i} for i in range(keys)]
    assert check(json.dumps(objects).encode(), max_keys=10) == expected


def test_keys_count_nested_objects() -> None:
    assert check(b'{"a": {"b": {"c": 1}}}', max_keys=3) is None
    assert check(b'{"a": {"b": {"c": 1, "d": 2}}}', max_keys=3) == "too_many_keys"


@pytest.mark.parametrize(
    "body",
    [
        b'{"__proto__": {"isAdmin": true}}',
        b'{"constructor": {"prototype": {"isAdmin": true}}}',
        b'{"a": {"b": [{"c": {"prototype": 1}}]}}',
        b'[1, 2, {"ok": [{"__proto__": null}]}]',
        b'{"\\u005f\\u005fproto\\u005f\\u005f": {"isAdmin": true}}',
    ],
    ids=["top-level-proto", "constructor-prototype", "prototype-deep", "proto-in-array", "escaped-proto"],
)
def test_forbidden_keys_are_refused_at_any_depth(body: bytes) -> None:
    assert check(body) == "forbidden_key"


def test_forbidden_keys_are_configurable() -> None:
    assert check(b'{"__proto__": 1}', forbidden=frozenset()) is None
    assert check(b'{"$where": 1}', forbidden=frozenset({"$where"})) == "forbidden_key"


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1, "a": 2}',
        b'{"role": "user", "name": "x", "role": "admin"}',
        b'{"outer": {"a": 1, "b": 2, "a": 3}}',
        b'[{"ok": 1}, {"x": 1, "x": 1}]',
        b'{"t": "12:00", "t": "13:00"}',
        b'{"a:b": 1, "a:b": 2}',
        b'{"a": "\\u003a", "a": 1}',
        b'{"\\u0061": 1, "a": 2}',
        b'{"a": {"__proto__": {"x": 1}}, "a": 2}',
    ],
    ids=[
        "simple", "CVE-2017-12635-couchdb-roles", "nested", "inside-array", "colons-in-values",
        "colons-in-keys", "escaped-colon-fallback", "escaped-key-spelling", "hides-forbidden-key",
    ],
)
def test_duplicate_keys_in_one_object_are_refused(body: bytes) -> None:
    assert check(body) == "duplicate_key"


def test_a_duplicate_hiding_deep_nesting_is_refused() -> None:
    # The first "a" is discarded by orjson, so the walk never sees its depth; the fallback parse does.
    body = b'{"a": ' + b"[" * 1000 + b"]" * 1000 + b', "a": 1, "k": "\\u003a"}'
    assert check(body) in {"duplicate_key", "too_deep"}


# A JSON text generator that can repeat keys, put ':' in keys and strings, and escape it as \u003a.
_keys = st.sampled_from(["a", "b", ":", "a:b", "é:", "x y"])
_strings = st.text(alphabet="ab:\"\\é", max_size=4)
_leaf = st.one_of(st.integers(-5, 5), st.none(), st.tuples(st.just("s"), _strings, st.booleans()))
_tree = st.recursive(
    _leaf,
    lambda children: st.one_of(
        st.tuples(st.just("list"), st.lists(children, max_size=4)),
        st.tuples(st.just("obj"), st.lists(st.tuples(_keys, st.booleans(), children), max_size=4)),
    ),
    max_leaves=20,
)


def _render_string(text: str, escape: bool) -> str:
    encoded = json.dumps(text)
    return encoded.replace(":", "\\u003a") if escape else encoded


def _render(node: Any) -> str:
    if isinstance(node, tuple) and node[0] == "s":
        return _render_string(node[1], node[2])
    if isinstance(node, tuple) and node[0] == "list":
        return "[" + ", ".join(_render(child) for child in node[1]) + "]"
    if isinstance(node, tuple) and node[0] == "obj":
        members = (f"{_render_string(key, escape)} : {_render(value)}" for key, escape, value in node[1])
        return "{" + ",".join(members) + "}"
    return json.dumps(node)


def _has_duplicates(text: str) -> bool:
    found = False

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal found
        found = found or len({k for k, _ in pairs}) != len(pairs)
        return dict(pairs)

    json.loads(text, object_pairs_hook=hook)
    return found


@settings(max_examples=400, deadline=None)
@given(_tree)
def test_duplicate_detection_agrees_with_a_pairs_parser(tree: Any) -> None:
    text = _render(tree)
    verdict = check(text.encode(), max_depth=100, max_keys=10_000, forbidden=frozenset())
    assert verdict == ("duplicate_key" if _has_duplicates(text) else None)
