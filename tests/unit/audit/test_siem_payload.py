"""``audit.siem_payload``: RFC 5424 headers that no value can break, and exact RFC 6587 octet counts."""

from __future__ import annotations

import pytest

from portcullis.audit.siem_payload import SiemMessage, octet_frame, syslog_message

MESSAGE = SiemMessage(b'{"a":"\\n"}', 1_700_000_000.5, "ocsf-4002", 4)


def test_a_message_has_the_rfc_5424_header_and_a_utf8_bom() -> None:
    out = syslog_message(MESSAGE, facility=13, hostname="gw-1", app_name="portcullis", procid="42")
    assert out == b'<108>1 2023-11-14T22:13:20.500Z gw-1 portcullis 42 ocsf-4002 - \xef\xbb\xbf{"a":"\\n"}'


@pytest.mark.parametrize(("hostname", "sent"), [
    pytest.param("gw 1\n<13>1 forged", "gw1<13>1forged", id="spaces-and-newline-removed"),
    pytest.param("", "-", id="empty-is-nilvalue"),
    pytest.param("h\u00e9te\x00", "hte", id="non-ascii-and-nul-removed"),
    pytest.param("h" * 300, "h" * 255, id="cut-to-255"),
])
def test_header_fields_are_printable_ascii_without_spaces(hostname: str, sent: str) -> None:
    out = syslog_message(MESSAGE, facility=13, hostname=hostname, app_name="portcullis", procid="1")
    assert out.split(b" ")[2].decode() == sent


def test_the_frame_counts_the_octets_of_the_message_exactly() -> None:
    message = "é\n12 <13>1".encode()
    assert octet_frame(message) == b"%d " % len(message) + message == b"11 " + message
