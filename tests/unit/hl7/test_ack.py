"""ACKs: original and enhanced modes, MSA-2 echo, ERR, AR for type/version/processing id,
ACKs never acknowledged; the ACK path decides without a full parse."""

from __future__ import annotations

from typing import Any

from hl7_bridge.ack import AckError, build_ack
from hl7_bridge.config import load_config
from hl7_bridge.header import parse_header
from hl7_bridge.intake import ACCEPT, IGNORE, REJECT, Intake

from .conftest import fixture

ORIGINAL = b"MSH|^~\\&|PAS|HOSP|HUB|HUB|20240101120000||ADT^A04|CTRL-\xe9|P|2.5.1\rPID|1||X\r"


def segments(ack: bytes) -> list[list[str]]:
    return [line.split("|") for line in ack.decode("latin-1").split("\r") if line]


def intake(**config: Any) -> Intake:
    return Intake(load_config(config), inbox=None, write=None)  # type: ignore[arg-type]


def test_original_aa_echoes_control_id_byte_for_byte() -> None:
    ack = build_ack(parse_header(ORIGINAL), "AA")
    msh, msa = segments(ack)
    assert msa == ["MSA", "AA", "CTRL-é"] and b"CTRL-\xe9" in ack
    assert msh[2:6] == ["REFLOOP", "REFLOOP", "PAS", "HOSP"]
    assert msh[8] == "ACK^A04^ACK" and msh[10:12] == ["P", "2.5.1"]


def test_ae_with_err_and_msa3() -> None:
    ack = build_ack(parse_header(ORIGINAL), "AE",
                    errors=(AckError(101, "PID-3 is empty", "PID", 1, 3),))
    _, msa, err = segments(ack)
    assert msa[1:] == ["AE", "CTRL-é", "PID-3 is empty"]
    assert err[2] == "PID^1^3" and err[3].startswith("101^") and err[4] == "E"


def test_pre_25_err_uses_eld() -> None:
    header = parse_header(ORIGINAL.replace(b"|2.5.1", b"|2.3"))
    err = segments(build_ack(header, "AR", errors=(AckError(203, "no", "MSH", 1, 12),)))[2]
    assert err[1].startswith("MSH^1^12^203&")


def test_custom_delimiters_are_echoed() -> None:
    header = parse_header(fixture("hapi__segmentfinder_a24.hl7"))
    ack = build_ack(header, "AA").decode("latin-1")
    assert ack.startswith("MSH^~|\\&^") and "ACK~A24~ACK" in ack


def test_intake_decisions() -> None:
    it = intake()
    assert it.assess(fixture("authored__REF_I12_new_referral_utf8.hl7")).action == ACCEPT
    assert it.assess(fixture("authored__ACK_original_AA.hl7")).action == IGNORE
    unsupported = intake(processing_ids=["P", "T"]).assess(fixture("hapi__cv.04_001_chem.hl7"))
    assert (unsupported.action, unsupported.outcome) == (REJECT, "AR")
    assert unsupported.errors[0].code == 200
    test_mode = it.assess(ORIGINAL.replace(b"|P|2.5.1", b"|T|2.5.1"))
    assert test_mode.outcome == "AR" and test_mode.errors[0].code == 202
    version = it.assess(ORIGINAL.replace(b"|2.5.1", b"|3.0"))
    assert version.errors[0].code == 203
    event = it.assess(ORIGINAL.replace(b"ADT^A04", b"ADT^A99"))
    assert event.errors[0].code == 201
    missing = it.assess(ORIGINAL.replace(b"PID|1||X", b"EVN|A04"))
    assert (missing.outcome, missing.errors[0].segment) == ("AE", "PID")
    garbage = it.assess(b"hello")
    assert garbage.header is None and garbage.outcome == "AR"


def test_allow_list_and_unknown_senders() -> None:
    assert intake(allow=["PAS^HOSP"]).assess(ORIGINAL).action == ACCEPT
    refused = intake(allow=["OTHER^X"]).assess(ORIGINAL)
    assert refused.outcome == "AR" and "not allowed" in refused.errors[0].text
    closed = intake(accept_unknown_senders=False).assess(ORIGINAL)
    assert closed.outcome == "AR"


def test_enhanced_mode_codes_and_msh15() -> None:
    it = intake()
    item = it.assess(fixture("authored__REF_I12_new_referral_utf8.hl7"))
    ack = it._ack_for(item)
    assert ack is not None and segments(ack)[1][1] == "CA"
    never = it.assess(fixture("authored__SIU_S12_v27_truncation_char_and_TQ1.hl7")
                      .replace(b"|AL|NE", b"|NE|NE"))
    assert it._ack_for(never) is None


def test_blank_control_id_and_a_multi_byte_charset_for_single_byte_text_are_refused() -> None:
    """An MSH-10 of spaces is empty (AR 101). MSH-18 UTF-16/UTF-32 on a message whose MSH was
    read one byte per character cannot be right (and MLLP cannot carry those encodings): AR
    103 at once, not an AA followed by a message that never maps."""
    blank = intake().assess(ORIGINAL.replace(b"CTRL-\xe9", b"   "))
    assert (blank.outcome, blank.errors[0].code, blank.errors[0].field) == ("AR", 101, 10)
    for charset in (b"UNICODE UTF-16", b"UNICODE UTF-32"):
        wide = intake().assess(ORIGINAL.replace(b"|2.5.1\r", b"|2.5.1||||||" + charset + b"\r"))
        assert (wide.outcome, wide.errors[0].code, wide.errors[0].field) == ("AR", 103, 18)
    utf8 = intake().assess(ORIGINAL.replace(b"|2.5.1\r", b"|2.5.1||||||UNICODE UTF-8\r"))
    assert utf8.action == ACCEPT


def test_a_nul_byte_is_named_by_segment_occurrence_and_field() -> None:
    raw = ORIGINAL + b"NTE|1||fine\rNTE|2||bro\x00ken\r"
    item = intake().assess(raw)
    assert (item.action, item.outcome) == (REJECT, "AE")
    error = item.errors[0]
    assert (error.code, error.segment, error.sequence, error.field) == (102, "NTE", 2, 3)
    msh = intake().assess(ORIGINAL.replace(b"HUB|HUB", b"HUB|H\x00UB"))
    assert (msh.errors[0].segment, msh.errors[0].field) == ("MSH", 6)


def test_framing_bytes_in_the_echoed_fields_are_left_out() -> None:
    """A sender that restarted a frame inside its MSH: the ACK stays one readable frame."""
    raw = b"MSH|^~\\&|PAS|HOSP|HUB|HUB|20240101||ADT^A04|C1|P|2\x0bMSH\x1c\rPID|1||X\r"
    ack = build_ack(parse_header(raw), "AR")
    assert b"\x0b" not in ack and b"\x1c" not in ack
    assert segments(ack)[1] == ["MSA", "AR", "C1"]
