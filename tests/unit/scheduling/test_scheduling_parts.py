"""Pure parts of the scheduling adapter: the reminder plan, reply words, the questionnaire
form, configuration errors, dates in English and Spanish, the .ics, IHE discovery, published
slot links."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import icalendar
import pytest

from scheduling.config import SchedulingConfigError, from_section
from scheduling.i18n import TEXT, format_when
from scheduling.ics import build_ics
from scheduling.patient import language_of
from scheduling.preparation import AnswerError, Question, questions, to_response
from scheduling.reminders import plan
from scheduling.replies import Intent, context_parts, parse_intent
from scheduling.sources.ihe import declares_ihe, ihe_operations
from scheduling.sources.published import _with_params

CHICAGO = ZoneInfo("America/Chicago")


def test_reminders_fall_at_the_local_hour_before_the_visit_and_skip_the_past() -> None:
    visit = datetime(2027, 3, 16, 15, 0, tzinfo=UTC)  # 10:00 in Chicago (CDT since 14 March)
    now = datetime(2027, 3, 1, tzinfo=UTC)
    steps = plan(visit, CHICAGO, [7, 2, 1], hour=10, now=now)
    assert [(s.days_before, s.due_at) for s in steps] == [
        (7, datetime(2027, 3, 9, 16, 0, tzinfo=UTC)),   # 10:00 CST, before the change
        (2, datetime(2027, 3, 14, 15, 0, tzinfo=UTC)),  # 10:00 CDT, the day it changes
        (1, datetime(2027, 3, 15, 15, 0, tzinfo=UTC))]
    late = plan(visit, CHICAGO, [7, 2, 1], hour=10, now=datetime(2027, 3, 14, 16, tzinfo=UTC))
    assert [s.days_before for s in late] == [1]
    assert plan(visit, CHICAGO, [0], hour=10, now=now) == []


def test_reminder_before_a_dst_change_uses_that_days_offset() -> None:
    visit = datetime(2027, 3, 16, 15, 0, tzinfo=UTC)
    [step] = plan(visit, CHICAGO, [10], hour=10, now=datetime(2027, 1, 1, tzinfo=UTC))
    assert step.due_at == datetime(2027, 3, 6, 16, 0, tzinfo=UTC)  # 10:00 CST


@pytest.mark.parametrize(("text", "intent"), [
    ("C", Intent.CONFIRM), ("c.", Intent.CONFIRM), ("Confirmo", Intent.CONFIRM),
    ("R", Intent.RESCHEDULE), ("cambiar por favor", Intent.RESCHEDULE),
    ("Cancel", Intent.CANCEL), ("CANCELAR", Intent.CANCEL), ("YES", Intent.ACCEPT),
    ("Sí", Intent.ACCEPT), ("si!", Intent.ACCEPT),
    ("call me tomorrow afternoon please", Intent.NONE),
    ("", Intent.NONE), ("maybe", Intent.NONE)])
def test_reply_words(text: str, intent: Intent) -> None:
    assert parse_intent(text) == intent


def test_reply_context() -> None:
    assert context_parts("scheduling:offer:abc") == ("offer", "abc")
    assert context_parts("outreach:first-contact") == ("", "")


QUESTIONNAIRE = {
    "resourceType": "Questionnaire", "id": "prep", "url": "http://example.org/q/prep",
    "status": "active",
    "item": [
        {"linkId": "diet", "type": "boolean", "required": True,
         "text": "Did you start the low-fibre diet?",
         "_text": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/translation",
                                  "extension": [{"url": "lang", "valueCode": "es"},
                                                {"url": "content",
                                                 "valueString": "¿Empezó la dieta?"}]}]}},
        {"linkId": "g", "type": "group", "item": [
            {"linkId": "blood", "type": "choice", "text": "Do you take blood thinners?",
             "answerOption": [{"valueCoding": {"code": "none", "display": "None"}},
                              {"valueCoding": {"code": "warfarin", "display": "Warfarin"}}]},
            {"linkId": "weight", "type": "decimal", "text": "Weight (kg)"}]},
        {"linkId": "note", "type": "display", "text": "Thank you"}]}


def test_questionnaire_form_and_response() -> None:
    asked = questions(QUESTIONNAIRE, "es")
    assert [(q.link_id, q.type) for q in asked] == [("diet", "boolean"), ("blood", "choice"),
                                                     ("weight", "decimal")]
    assert asked[0].text == "¿Empezó la dieta?"
    response = to_response(QUESTIONNAIRE, asked, {"q-diet": "true", "q-blood": "warfarin",
                                                  "q-weight": "71.5"},
                           subject="Patient/1", based_on="ServiceRequest/2", language="es")
    assert response["questionnaire"] == "http://example.org/q/prep"
    assert [i["answer"][0] for i in response["item"]] == [
        {"valueBoolean": True}, {"valueCoding": {"code": "warfarin", "display": "Warfarin"}},
        {"valueDecimal": 71.5}]
    with pytest.raises(AnswerError) as missing:
        to_response(QUESTIONNAIRE, asked, {}, subject="Patient/1", based_on="x",
                    language="en")
    assert missing.value.question.link_id == "diet"
    with pytest.raises(AnswerError):
        to_response(QUESTIONNAIRE, asked, {"q-diet": "true", "q-blood": "aspirin"},
                    subject="Patient/1", based_on="x", language="en")
    # Python reads these as numbers; none is a FHIR decimal (NaN was stored as null) or integer
    for weight in ("nan", "inf", "-Infinity", "1e999", "7_1"):
        with pytest.raises(AnswerError):
            to_response(QUESTIONNAIRE, asked, {"q-diet": "true", "q-blood": "none",
                                               "q-weight": weight},
                        subject="Patient/1", based_on="x", language="en")
    count = [Question("n", "How many?", "integer")]
    for number in ("2147483648", "99999999999999999999", "1_0", "\uff11"):
        with pytest.raises(AnswerError):
            to_response({}, count, {"q-n": number}, subject="Patient/1", based_on="x",
                        language="en")
    assert to_response({}, count, {"q-n": "-3"}, subject="Patient/1", based_on="x",
                       language="en")["item"][0]["answer"] == [{"valueInteger": -3}]


def test_configuration_errors_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(SchedulingConfigError, match="fhir_base"):
        from_section({"destinations": [{"name": "a", "specialties": ["x"]}]})
    with pytest.raises(SchedulingConfigError, match="manifest_url"):
        from_section({"destinations": [{"name": "a", "specialties": ["x"],
                                        "source": "smart-links"}]})
    with pytest.raises(SchedulingConfigError, match="IANA"):
        from_section({"destinations": [{"name": "a", "specialties": ["x"],
                                        "fhir_base": "http://e/fhir", "time_zone": "Mars"}]})
    with pytest.raises(SchedulingConfigError, match="unknown keys"):
        from_section({"link_dayz": 3})
    path = tmp_path / "q.json"
    path.write_text(json.dumps(QUESTIONNAIRE))
    config = from_section({
        "reminder_days": [1, 7, 2], "reminders_by_specialty": {"GI": [10, 3]},
        "preparation": {"colonoscopy": {"questionnaire": "q.json", "instructions_en": "Diet",
                                        "instructions_es": "Dieta", "reminder_days": [3]}},
        "destinations": [{"name": "gi", "specialties": ["Gastroenterology"],
                          "fhir_base": "http://e/fhir", "preparation": "colonoscopy"}]},
        tmp_path)
    assert config.reminder_days == (7, 2, 1) and config.ladder_for("gi") == (10, 3)
    assert config.destination_for("gastroenterology", "").name == "gi"
    assert config.preparations["colonoscopy"].instructions_for("es") == "Dieta"


def test_dates_in_english_and_spanish() -> None:
    moment = datetime(2027, 3, 2, 15, 30, tzinfo=UTC)
    assert format_when(moment, "America/Chicago", "en") == "Tuesday 2 March 2027, 9:30 AM"
    assert format_when(moment, "America/Chicago", "es") == "martes 2 de marzo de 2027, 9:30"
    assert all(set(v) == {"en", "es"} for v in TEXT.values())


def test_language_from_the_patient() -> None:
    spanish = {"communication": [{"language": {"coding": [{"code": "es-MX"}]},
                                  "preferred": True}]}
    assert language_of(spanish) == "es"
    assert language_of({"communication": [{"language": {"text": "Spanish"}}]}) == "es"
    assert language_of({}) == "en"


def test_ics_event() -> None:
    start = datetime(2027, 3, 2, 15, 30, tzinfo=UTC)
    raw = build_ics(uid="appt-1@refloop", start=start, end=start + timedelta(minutes=30),
                    zone="America/Chicago", summary="Cardiology appointment",
                    location="12 Elm Street, Springfield", description="With Dr Eva",
                    organizer="mailto:s@example.org", sequence=2)
    calendar = icalendar.Calendar.from_ical(raw)
    assert str(calendar["method"]) == "PUBLISH"
    [event] = calendar.walk("VEVENT")
    assert event.decoded("dtstart") == start.astimezone(CHICAGO)
    assert event["sequence"] == 2 and str(event["uid"]) == "appt-1@refloop"
    assert calendar.walk("VTIMEZONE") and calendar.walk("VALARM")
    cancelled = icalendar.Calendar.from_ical(build_ics(
        uid="appt-1@refloop", start=start, end=None, zone="UTC", summary="x", location="",
        description="", organizer="mailto:s@example.org", cancelled=True))
    assert str(cancelled["method"]) == "CANCEL"
    assert str(cancelled.walk("VEVENT")[0]["status"]) == "CANCELLED"


def test_ihe_operations_from_the_capability_statement() -> None:
    capability = {"rest": [{"resource": [{"type": "Appointment", "operation": [
        {"name": "find", "definition": "https://profiles.ihe.net/ITI/Scheduling/"
                                       "OperationDefinition/appointment-find"},
        {"name": "$book", "definition": "x"}]}]}]}
    assert ihe_operations(capability) == {"find", "book"} and declares_ihe(capability)
    assert not declares_ihe({"rest": [{"resource": [{"type": "Slot"}]}]})


def test_deep_link_parameters_are_added_not_concatenated() -> None:
    url = _with_params("https://book.example/s?slot=1&source=x#top",
                       {"source": "refloop", "booking-referral": "r 1"})
    assert url == "https://book.example/s?slot=1&source=refloop&booking-referral=r+1#top"
