"""The cheap checks of the ACK path: unusable MSH-2, the referral identifier a REF needs,
connection caps, and the ACK's cached parts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hl7_bridge.ack import build_ack
from hl7_bridge.header import EncodingCharactersError, encoding_problem, parse_header
from hl7_bridge.listener import ConnectionLimits
from hl7_bridge.requirements import missing_referral_key


@pytest.mark.parametrize("encoding", ["^~\\&", "^~\\\\&", "^~\\&#", "^~", "~|\\&", "^~\\}"])
def test_usable_encoding_characters(encoding: str) -> None:
    assert encoding_problem(encoding) is None


@pytest.mark.parametrize("encoding", ["^^^^", "^~^&", "^~\\^", "^a\\&", "^ \\&"])
def test_unusable_encoding_characters(encoding: str) -> None:
    assert encoding_problem(encoding)


def test_unusable_encoding_characters_still_give_a_header_to_answer() -> None:
    raw = b"MSH|^^^^|APP|FAC|HUB|HUB|20240101||ADT^A04|CTRL9|P|2.5.1\rPID|1\r"
    with pytest.raises(EncodingCharactersError) as caught:
        parse_header(raw)
    header = caught.value.header
    assert header.control_id == "CTRL9" and header.sender == "APP^FAC"
    assert b"MSA|AR|CTRL9" in build_ack(header, "AR")


def ref(rf1: str, extra: str = "") -> bytes:
    return (f"MSH|^~\\&|A|F|H|H|20240101||REF^I12^REF_I12|C1|P|2.5.1\r{rf1}"
            f"PID|1||X^^^A^MR\r{extra}").encode()


@pytest.mark.parametrize("raw", [
    ref("RF1|A|R||||R-1^A\r"),
    ref("RF1|A|R||||R-1\r"),
    ref("", "OBR|1|ORD-1^A||57133-1^Referral^LN\r"),
    ref("RF1|A|R||||\r", "ORC|NW||FILL-9^B\r"),
])
def test_a_referral_identifier_is_found(raw: bytes) -> None:
    assert missing_referral_key(raw, parse_header(raw), "REF_I12") is None


@pytest.mark.parametrize("raw", [
    ref("RF1|A|R||||\r"), ref(""), ref('RF1|A|R||||""\r'), ref("RF1|A|R||||^A\r"),
    ref("RF1|A|R|||\r"),
])
def test_a_missing_referral_identifier_names_rf1_6(raw: bytes) -> None:
    error = missing_referral_key(raw, parse_header(raw), "REF_I12")
    assert error is not None and (error.segment, error.field, error.code) == ("RF1", 6, 101)


def test_other_structures_are_not_checked() -> None:
    raw = ref("")
    assert missing_referral_key(raw, parse_header(raw), "ADT_A01") is None


def test_connection_caps_count_per_source_and_in_total() -> None:
    limits = ConnectionLimits(total=3, per_source=2)
    assert limits.admit("a") and limits.admit("a") and not limits.admit("a")
    assert limits.admit("b") and not limits.admit("c")  # total reached
    limits.release("a")
    assert limits.admit("c") and not limits.admit("a")
    unlimited = ConnectionLimits(0, 0)
    assert all(unlimited.admit("a") for _ in range(1000))


def test_the_ack_timestamp_is_now() -> None:
    raw = b"MSH|^~\\&|A|F|H|H|20240101||ADT^A04|C1|P|2.5.1\r"
    stamp = build_ack(parse_header(raw), "AA").split(b"|")[6].decode()
    moment = datetime.strptime(stamp, "%Y%m%d%H%M%S%z")
    assert abs((datetime.now(UTC) - moment).total_seconds()) < 5
