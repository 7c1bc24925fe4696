"""The ``X-Forwarded-Client-Cert`` parser: Envoy's format, strictly (see ``identity/xfcc.py``)."""

from __future__ import annotations

import pytest

from portcullis.errors import Unauthenticated
from portcullis.identity.xfcc import identity_from_xfcc, parse_xfcc

HASH = "0123456789abcdef" * 4


def parse(text: str) -> list[dict[str, list[str]]]:
    return parse_xfcc(text.encode(), max_bytes=4096, max_elements=4)


def test_envoys_documented_example_parses() -> None:
    # From Envoy's x-forwarded-client-cert documentation (Subject in RFC 2253 form, as Envoy writes it).
    value = (f'By=http://frontend.lyft.com;Hash={HASH};Subject="CN=Test Client,OU=Lyft,L=San Francisco,ST=CA,'
             'C=US";URI=http://testclient.lyft.com;DNS=lyft.com;DNS=www.lyft.com')
    [element] = parse(value)
    ident = identity_from_xfcc(element)
    assert ident.subject_cn == ("Test Client",)
    assert ident.san_dns == ("lyft.com", "www.lyft.com")
    assert ident.san_uri == ("http://testclient.lyft.com",)
    assert ident.fingerprint_sha256 == HASH


def test_quoted_values_keep_commas_semicolons_and_escaped_quotes() -> None:
    [element] = parse(f'Hash={HASH};By="a,b;c \\"q\\"";Subject="CN=a\\, b\\;c,O=x"')
    assert element["By"] == ['a,b;c "q"']
    assert element["Subject"] == ["CN=a\\, b\\;c,O=x"]  # RFC 4514 escapes stay for the DN parser
    assert identity_from_xfcc(element).subject_cn == ("a, b;c",)


def test_each_hop_is_one_element_in_order() -> None:
    elements = parse(f"Hash={HASH};By=a,Hash={'f' * 64};By=b")
    assert [e["By"] for e in elements] == [["a"], ["b"]]


@pytest.mark.parametrize("value", [
    pytest.param("", id="empty"),
    pytest.param(f"Hash={HASH},", id="trailing-comma"),
    pytest.param(f"Hash={HASH};;By=a", id="empty-pair"),
    pytest.param(f"hash={HASH}", id="key-case"),
    pytest.param(f'Hash={HASH};Subject="CN=a', id="unterminated-quote"),
    pytest.param(f'Hash={HASH};Subject="CN=a"x', id="text-after-quote"),
    pytest.param(f"Hash={HASH};By=a=b", id="bare-equals"),
    pytest.param(f"Hash={HASH};By=a\tb", id="control-character"),
    pytest.param(f"Hash={HASH};By=a;By=b", id="repeated-by"),
    pytest.param(",".join([f"Hash={HASH}"] * 5), id="too-many-elements"),
    pytest.param(f"Hash={HASH};By=" + "x" * 5000, id="too-large"),
    pytest.param(f"Hash={HASH};By=caf\u00e9", id="non-ascii"),
])
def test_malformed_headers_are_refused_whole(value: str) -> None:
    with pytest.raises(Unauthenticated):
        parse(value)


@pytest.mark.parametrize("element", [
    pytest.param({"By": ["a"]}, id="no-hash"),
    pytest.param({"Hash": ["abc"]}, id="short-hash"),
    pytest.param({"Hash": [HASH], "Subject": ["/C=US/CN=x"]}, id="subject-not-rfc4514"),
])
def test_an_element_without_a_usable_hash_or_subject_names_no_certificate(element: dict[str, list[str]]) -> None:
    with pytest.raises(Unauthenticated):
        identity_from_xfcc(element)
