"""framing_error and expectation: the head rules llhttp leaves to us (RFC 9112 sections 3.2, 6.1, 6.3;
RFC 9110 section 10.1.1)."""

from __future__ import annotations

import pytest

from portcullis.server.framing import Expectation, expectation, framing_error, head_framing_error

CASES = [
    # version, host_count, te_count, te, cl_count, cl, expected
    pytest.param("1.1", 1, 0, b"", 0, b"", None, id="plain-get"),
    pytest.param("1.1", 1, 1, b"chunked", 0, b"", None, id="chunked"),
    pytest.param("1.1", 1, 1, b"Chunked", 0, b"", None, id="RFC9112-7-coding-names-are-case-insensitive"),
    pytest.param("1.1", 1, 0, b"", 1, b"12", None, id="content-length"),
    pytest.param("1.0", 0, 0, b"", 0, b"", None, id="RFC9112-3.2-http10-without-host"),
    pytest.param("0.9", 1, 0, b"", 0, b"", "http_version", id="http09"),
    pytest.param("2.0", 1, 0, b"", 0, b"", "http_version", id="http2-version-on-http1"),
    pytest.param("1.1", 0, 0, b"", 0, b"", "missing_host", id="RFC9112-3.2-missing-host"),
    pytest.param("1.1", 2, 0, b"", 0, b"", "duplicate_host", id="RFC9112-3.2-duplicate-host"),
    pytest.param("1.0", 2, 0, b"", 0, b"", "duplicate_host", id="http10-duplicate-host"),
    pytest.param("1.0", 1, 1, b"chunked", 0, b"", "te_in_http10", id="RFC9112-6.1-te-in-http10"),
    pytest.param("1.1", 1, 1, b"chunked", 1, b"4", "cl_and_te", id="portswigger-CL.TE"),
    pytest.param("1.1", 1, 1, b"xchunked", 0, b"", "te_not_chunked", id="CVE-2019-18277-xchunked"),
    pytest.param("1.1", 1, 1, b"chunked, identity", 0, b"", "te_not_chunked", id="portswigger-TE-list"),
    pytest.param("1.1", 1, 2, b"chunked", 0, b"", "te_not_chunked", id="portswigger-TE.TE"),
    pytest.param("1.1", 1, 0, b"", 2, b"5", "bad_content_length", id="RFC9112-6.3-duplicate-cl"),
    pytest.param("1.1", 1, 0, b"", 1, b"+5", "bad_content_length", id="cl-with-sign"),
    pytest.param("1.1", 1, 0, b"", 1, b"1" * 19, "bad_content_length", id="CVE-2018-7159-cl-overflow"),
]


@pytest.mark.parametrize(("version", "hosts", "te_count", "te", "cl_count", "cl", "expected"), CASES)
def test_framing_rules(
    version: str, hosts: int, te_count: int, te: bytes, cl_count: int, cl: bytes, expected: str | None
) -> None:
    assert framing_error(version, hosts, te_count, te, cl_count, cl) == expected


def head_for(hosts: int, te_count: int, te: bytes, cl_count: int, cl: bytes) -> list[tuple[bytes, bytes]]:
    """A header list with those fields (the last of each kind carrying the value), among others."""
    headers = [(b"user-agent", b"t")]
    headers += [(b"host", b"h%d" % i) for i in range(hosts)]
    headers += [(b"transfer-encoding", b"chunked")] * (te_count - 1) + [(b"transfer-encoding", te)] * min(te_count, 1)
    headers += [(b"content-length", b"0")] * (cl_count - 1) + [(b"content-length", cl)] * min(cl_count, 1)
    return headers


@pytest.mark.parametrize(("version", "hosts", "te_count", "te", "cl_count", "cl", "expected"), CASES)
def test_a_whole_header_list_gets_the_same_answer_as_the_server_s_counts(
    version: str, hosts: int, te_count: int, te: bytes, cl_count: int, cl: bytes, expected: str | None
) -> None:
    assert head_framing_error(version, head_for(hosts, te_count, te, cl_count, cl)) == expected


def test_the_first_rule_broken_names_the_reason() -> None:
    # CL.TE with an obfuscated coding and a bad length: the pair itself is what is refused.
    headers = [(b"host", b"a"), (b"transfer-encoding", b"xchunked"), (b"content-length", b"+5")]
    assert head_framing_error("1.1", headers) == "cl_and_te"


EXPECTATIONS = [
    # every Expect field of a request joined with commas, what it asks
    pytest.param(b"100-continue", Expectation.CONTINUE, id="RFC9110-10.1.1-100-continue"),
    pytest.param(b"100-CONTINUE", Expectation.CONTINUE, id="RFC9110-10.1.1-case-insensitive"),
    pytest.param(b"100-continue \t", Expectation.CONTINUE, id="trailing-whitespace-llhttp-leaves-in-the-value"),
    pytest.param(b"100-continue,100-continue", Expectation.CONTINUE, id="RFC9110-5.3-two-fields-joined"),
    pytest.param(b"100-continue, ,", Expectation.CONTINUE, id="RFC9110-5.6.1-empty-members-ignored"),
    pytest.param(b" , ", Expectation.NONE, id="RFC9110-5.6.1-only-empty-members"),
    pytest.param(b"something", Expectation.UNSUPPORTED, id="RFC9110-10.1.1-unknown-expectation"),
    pytest.param(b"100-continue; foo=bar", Expectation.UNSUPPORTED, id="RFC9110-10.1.1-no-defined-parameters"),
    pytest.param(b"100-continue=1", Expectation.UNSUPPORTED, id="RFC9110-10.1.1-no-value"),
    pytest.param(b"y 100-continue", Expectation.UNSUPPORTED, id="kettle-2025-expect-desync-obfuscation"),
    pytest.param(b"100-continue,x", Expectation.UNSUPPORTED, id="unknown-member-beside-100-continue"),
    pytest.param(b"100-continu", Expectation.UNSUPPORTED, id="near-miss"),
]


@pytest.mark.parametrize(("value", "asked"), EXPECTATIONS)
def test_expect_asks_for_100_continue_or_nothing_or_is_unsupported(value: bytes, asked: Expectation) -> None:
    assert expectation(value) is asked
