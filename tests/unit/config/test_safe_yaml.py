"""The config's YAML parser refuses documents built to exhaust whoever reads them, in one line."""

from __future__ import annotations

import pytest

from portcullis.config.safe_yaml import MAX_DEPTH, MAX_SCALAR_CHARS, parse_yaml
from portcullis.errors import ConfigFileError

# The classic "billion laughs" YAML variant: nine levels of nine aliases expand to 9**9 strings.
# Source: CVE-2019-11253 (Kubernetes API server, YAML parsing of a ConfigMap), same shape.
BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def refusal(text: str) -> str:
    with pytest.raises(ConfigFileError) as info:
        parse_yaml(text, source="gw.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("text", [
    pytest.param(BILLION_LAUGHS, id="CVE-2019-11253-billion-laughs"),
    pytest.param("base: &b {url: 'http://a'}\nother:\n  <<: *b\n", id="merge-key-alias"),
    pytest.param("a: &x 1\nb: *x\n", id="scalar-alias"),
])
def test_yaml_aliases_are_refused_with_the_file_and_line(text: str) -> None:
    message = refusal(text)
    assert message.startswith("gw.yaml, line ")
    assert "YAML aliases" in message


def test_the_billion_laughs_refusal_points_at_the_first_alias() -> None:
    assert refusal(BILLION_LAUGHS).startswith("gw.yaml, line 2, column 8: refused: YAML aliases")


def test_anchors_without_aliases_and_inline_merge_keys_still_load() -> None:
    data = parse_yaml("a: &unused {x: 1}\nb:\n  <<: {x: 2, y: 3}\n  y: 4\n", source="gw.yaml")
    assert data == {"a": {"x": 1}, "b": {"x": 2, "y": 4}}


def test_a_value_longer_than_the_limit_is_refused_with_its_line() -> None:
    message = refusal("ok: 1\nbig: " + "x" * (MAX_SCALAR_CHARS + 1) + "\n")
    assert message == "gw.yaml, line 2, column 6: refused: a value longer than 64 KiB"


def test_a_value_at_the_limit_loads() -> None:
    assert parse_yaml("v: " + "x" * MAX_SCALAR_CHARS, source="gw.yaml") == {"v": "x" * MAX_SCALAR_CHARS}


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    text = "".join(" " * i + "k:\n" for i in range(MAX_DEPTH + 5))
    assert "refused: nesting deeper than 64 levels" in refusal(text)


def test_flow_nesting_a_hundred_thousand_deep_is_refused() -> None:
    assert refusal("[" * 100_000).startswith("gw.yaml, line 1, column ")


@pytest.mark.parametrize("text", [
    pytest.param("when: 2024-13-45\n", id="impossible-timestamp"),
    pytest.param("n: " + "9" * 5000 + "\n", id="integer-past-int-max-str-digits"),
])
def test_a_value_that_cannot_be_converted_is_one_line_not_a_traceback(text: str) -> None:
    assert refusal(text) == "gw.yaml: not valid YAML (a value cannot be converted to its type)"


def test_a_syntax_error_names_the_line_and_column() -> None:
    assert refusal("routes: [}").startswith("gw.yaml, line 1, column 10: not valid YAML")
