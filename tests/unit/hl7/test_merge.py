"""v2 update semantics (hl7_bridge/merge.py): empty keeps, `""` deletes, valued replaces,
field by field; keyed and list segments; states in the standard encoding."""

from __future__ import annotations

from hl7_bridge import merge
from hl7_bridge.message import Segment, parse_message


def segments(text: str) -> list[Segment]:
    message = parse_message(("MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|2.5.1\r" + text)
                            .encode())
    return message.segments[1:]


def test_a_new_state_is_the_message_in_the_standard_encoding() -> None:
    message = parse_message(b"MSH#$%@*#A#B#C#D#20240101##ADT$A08#1#P#2.5.1\r"
                            b"PID#1##X1$$$HOSP$MR%X2$$$HOSP#|^ pipe$a*b\r")
    (line,) = merge.merge(None, message.segments[1:], merge.PATIENT, message.charset)
    assert line == "PID|1||X1^^^HOSP^MR~X2^^^HOSP|\\F\\\\S\\ pipe^a&b"


def test_fields_merge_one_by_one() -> None:
    stored = merge.merge(None, segments("PID|1||X1^^^H||Doe^Jane||19800101|F|||1 Main St\r"),
                         merge.PATIENT, "utf-8")
    # PID-5 valued: replaced; PID-7 empty: kept; PID-11 "": deleted; PID-13 new: added
    update = segments('PID|1||X1^^^H||Smith^Jane||||||""||^PRN^PH^^1^555^1234\r')
    (line,) = merge.merge(stored, update, merge.PATIENT, "utf-8")
    fields = line.split("|")
    assert fields[5] == "Smith^Jane" and fields[7] == "19800101" and fields[8] == "F"
    assert fields[11] == "" and fields[13] == "^PRN^PH^^1^555^1234"


def test_patient_identifiers_accumulate() -> None:
    stored = merge.merge(None, segments("PID|1||X1^^^H^MR~123-45-6789^^^SSA^SS\r"),
                         merge.PATIENT, "utf-8")
    (line,) = merge.merge(stored, segments("PID|1||X2^^^H^MR~X1^^^H^MR\r"), merge.PATIENT,
                          "utf-8")
    assert line.split("|")[3] == "X2^^^H^MR~X1^^^H^MR~123-45-6789^^^SSA^SS"


def test_patient_identifiers_are_capped_keeping_the_newest() -> None:
    stored = merge.merge(None, segments("PID|1||X0^^^H^MR\r"), merge.PATIENT, "utf-8")
    for n in range(1, merge.MAX_IDENTIFIERS + 5):
        stored = merge.merge(stored, segments(f"PID|1||X{n}^^^H^MR\r"), merge.PATIENT,
                             "utf-8")
    ids = stored[0].split("|")[3].split("~")
    assert len(ids) == merge.MAX_IDENTIFIERS
    assert ids[0] == f"X{merge.MAX_IDENTIFIERS + 4}^^^H^MR" and "X0^^^H^MR" not in ids


def test_providers_are_keyed_by_role() -> None:
    stored = merge.merge(None, segments("RF1|P|R||||R1\rPRD|RP|Ref^Rita||||^WPN^PH^^1^555^1\r"
                                        "PRD|RT|To^Tom\r"), merge.REFERRAL, "utf-8")
    merged = merge.merge(stored, segments("RF1||A||||R1\rPRD|RT|Other^Olga\r"),
                         merge.REFERRAL, "utf-8")
    assert merged == ["RF1|P|A||||R1", "PRD|RP|Ref^Rita||||^WPN^PH^^1^555^1",
                      "PRD|RT|Other^Olga"]


def test_lists_are_replaced_kept_or_emptied() -> None:
    stored = merge.merge(None, segments("RF1|P||||||R1\rDG1|1||I10^Hypertension^I10\r"
                                        "DG1|2||E11^Diabetes^I10\r"), merge.REFERRAL, "utf-8")
    kept = merge.merge(stored, segments("RF1||S\r"), merge.REFERRAL, "utf-8")
    assert [s for s in kept if s.startswith("DG1")] == [
        "DG1|1||I10^Hypertension^I10", "DG1|2||E11^Diabetes^I10"]
    replaced = merge.merge(stored, segments("DG1|1||R07.9^Chest pain^I10\r"), merge.REFERRAL,
                           "utf-8")
    assert [s for s in replaced if s.startswith("DG1")] == ["DG1|1||R07.9^Chest pain^I10"]
    emptied = merge.merge(stored, segments('DG1|1||""\r'), merge.REFERRAL, "utf-8")
    assert [s for s in emptied if s.startswith("DG1")] == []


def test_insurance_is_keyed_by_set_id_with_its_in2() -> None:
    stored = merge.merge(None, segments("IN1|1|PLAN1|PAYER1|Payer One\rIN2||111-22-3333\r"
                                        "IN1|2|PLAN2|PAYER2|Payer Two\r"), merge.REFERRAL,
                         "utf-8")
    merged = merge.merge(stored, segments("IN1|2||||||||||||20250101\r"), merge.REFERRAL,
                         "utf-8")
    assert merged == ["IN1|1|PLAN1|PAYER1|Payer One", "IN2||111-22-3333",
                      "IN1|2|PLAN2|PAYER2|Payer Two|||||||||20250101"]


def test_segments_outside_the_rule_are_kept() -> None:
    """An ADT's IN1 lives in the patient's state; a REF's PID update leaves it alone."""
    stored = merge.merge(None, segments("PID|1||X1\rIN1|1|PLAN|PAYER\r"),
                         merge.PATIENT_WITH_INSURANCE, "utf-8")
    merged = merge.merge(stored, segments("PID|1||X1||Doe^Jane\r"), merge.PATIENT, "utf-8")
    assert merged == ["PID|1||X1||Doe^Jane", "IN1|1|PLAN|PAYER"]


def test_the_merged_message_keeps_what_no_state_covers() -> None:
    message = parse_message(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A40^ADT_A39|1|P|2.5.1\r"
                            b"EVN|A40\rPID|1||X1\rMRG|OLD1\r")
    merged = merge.merged_message(message, ["PID|1||X1||Doe^Jane"], [], ())
    assert [s.name for s in merged.segments] == ["MSH", "PID", "EVN", "MRG"]
    assert merged.first("PID").get(5) == "Doe" and merged.control_id == "1"
