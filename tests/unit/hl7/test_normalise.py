"""The quirk samples: BOM, LF/CRLF, latin-1 with MSH-18, custom delimiters, batches,
Z-segments, escapes, the v2.7 truncation character, the large base64 note."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hl7_bridge.encoding import Delimiters, escape, unescape
from hl7_bridge.header import HeaderError, parse_header
from hl7_bridge.message import MessageError, parse_message, parse_messages

from .conftest import fixture


def test_bom_and_crlf() -> None:
    msg = parse_message(fixture("authored__ADT_A04_utf8_BOM_CRLF.hl7"))
    assert msg.names()[0] == "MSH" and len(msg.segments) == 4
    pid = msg.first("PID")
    assert pid is not None and any(ord(ch) > 127 for ch in pid.get(5) + pid.get(5, 2))


def test_latin1_by_msh18() -> None:
    raw = fixture("authored__ADT_A04_latin1_MSH18_8859-1.hl7")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    msg = parse_message(raw)
    assert msg.charset == "latin-1"
    text = " ".join(s.raw(5) + s.raw(11) for s in msg.all("PID"))
    assert any(ch in text for ch in "äöüßÄÖÜé")


def test_lf_no_msh12_zsegment_and_escapes() -> None:
    msg = parse_message(fixture("authored__ADT_A08_LF_no_MSH12_Zseg_escapes.hl7"),
                        default_version="2.4")
    assert msg.names() == ["MSH", "EVN", "PID", "PV1", "ZPD", "NTE"]
    assert msg.version == "2.4"  # empty MSH-12: the sender's default
    pid, zpd, nte = msg.first("PID"), msg.first("ZPD"), msg.first("NTE")
    assert pid.get(5) == "SMITH^JONES"          # \S\
    assert pid.get(11) == "Flat 3|Block B"      # \F\
    assert pid.get(33) == ""                    # "" null reads as empty
    assert zpd.get(2) == "Prefers&likes Welsh\\English"  # \T\ and \E\
    assert zpd.get(3) == "\r\nembedded CRLF via hex escape"  # \X0D0A\
    assert nte.whole(3) == "Line one\nLine two highlighted normal"  # \.br\ \H\ \N\


def test_custom_delimiters() -> None:
    msg = parse_message(fixture("hapi__segmentfinder_a24.hl7"))
    assert msg.d.field == "^" and msg.d.component == "~" and msg.d.repetition == "|"
    assert (msg.message_type, msg.trigger_event) == ("ADT", "A24")
    assert len(msg.all("PID")) == 2


def test_duplicated_escape_character() -> None:
    for name in ("lfh__sample_unix.hl7", "lfh__sample_win.hl7"):
        msg = parse_message(fixture(name))
        assert msg.d.escape == "\\" and msg.d.subcomponent == "&"
        assert msg.first("PID") is not None


def test_truncation_character_v27() -> None:
    msg = parse_message(fixture("authored__SIU_S12_v27_truncation_char_and_TQ1.hl7"))
    assert msg.d.truncation == "#" and msg.version == "2.7"
    assert msg.structure == "SIU_S12" and msg.first("TQ1").get(7) == "20240603091500+0100"


def test_structure_from_trigger_not_msh93() -> None:
    assert parse_message(fixture("msfhirconv__ADT-A40-01.hl7")).structure == "ADT_A39"
    assert parse_message(fixture("msfhirconv__REF-I14-01.hl7")).structure == "REF_I12"
    assert parse_message(fixture("msfhirconv__ADT04-23.hl7")).structure == "ADT_A01"


def test_batches() -> None:
    assert len(parse_messages(fixture("pyhl7__samples.sample_batch1.hl7"))) == 2
    assert len(parse_messages(fixture("pyhl7__samples.sample_file1.hl7"))) == 3
    with pytest.raises(MessageError):
        parse_messages(fixture("pyhl7__samples.sample_bad_batch.hl7"))


def test_large_base64_note() -> None:
    raw = fixture("authored__MDM_T02_large_base64_pdf.hl7")
    assert len(raw) > 250_000
    obx = parse_message(raw).first("OBX")
    assert obx.get(2) == "ED" and obx.get(5, 5).startswith("JVBERi0")


def test_header_reading_is_lean_and_exact() -> None:
    raw = fixture("authored__REF_I12_new_referral_utf8.hl7")
    header = parse_header(raw)
    assert header.sender == "GPSYS^GPCLINIC" and header.control_id == "GP000101"
    assert (header.message_type, header.trigger_event, header.version) == ("REF", "I12", "2.5.1")
    assert header.enhanced_mode and header.accept_ack_type == "AL"
    assert parse_header(fixture("msfhirconv__ADT04-23.hl7")).version == "2.3"  # after a BOM
    with pytest.raises(HeaderError):
        parse_header(b"PID|1||x\r")


def test_every_fixture_message_parses() -> None:
    from .conftest import FIXTURES

    for path in sorted(FIXTURES.iterdir()):
        if path.suffix in (".json", ".bin", ".md") or "bad_batch" in path.name:
            continue
        messages = parse_messages(path.read_bytes())
        assert messages and all(m.msh.name == "MSH" for m in messages), path.name


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_escape_round_trip(text: str) -> None:
    d = Delimiters()
    text = text.replace("\r", "")
    assert unescape(escape(text, d), d, "utf-8") == text


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_parser_raises_only_its_own_errors(data: bytes) -> None:
    raw = b"MSH|^~\\&|" + data
    with contextlib.suppress(MessageError, HeaderError):
        parse_messages(raw)
