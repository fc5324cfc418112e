"""Pre-visit preparation: a FHIR Questionnaire shown as a form on the patient's link (item text
in the patient's language through the standard `translation` extension), answers checked and
turned into a QuestionnaireResponse (pure functions here; storing and sending are elsewhere)."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation"
SUPPORTED = ("string", "text", "boolean", "integer", "decimal", "date", "choice")
_INTEGER = re.compile(r"[+-]?[0-9]{1,10}")
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?")


@dataclass(frozen=True)
class Choice:
    value: str
    label: str


@dataclass(frozen=True)
class Question:
    link_id: str
    text: str
    type: str
    required: bool = False
    choices: list[Choice] = field(default_factory=list)

    @property
    def field_name(self) -> str:
        return f"q-{self.link_id}"


class AnswerError(ValueError):
    """An answer is missing or not of the right kind; `question` says which."""

    def __init__(self, question: Question, why: str) -> None:
        self.question = question
        super().__init__(why)


def questions(questionnaire: dict[str, Any], language: str) -> list[Question]:
    """The items we can show as form fields (groups are flattened; displays are skipped)."""
    found: list[Question] = []
    for item in _flatten(questionnaire.get("item") or []):
        kind = str(item.get("type") or "")
        if kind not in SUPPORTED:
            continue
        choices = [Choice(*_option(o, language)) for o in item.get("answerOption") or []]
        found.append(Question(str(item["linkId"]), _text(item, language), kind,
                              bool(item.get("required")), choices))
    return found


def to_response(questionnaire: dict[str, Any], asked: list[Question],
                form: Mapping[str, str], *, subject: str, based_on: str,
                language: str, now: datetime | None = None) -> dict[str, Any]:
    """The QuestionnaireResponse for the submitted form; AnswerError for a bad answer."""
    items = []
    for question in asked:
        raw = str(form.get(question.field_name, "")).strip()
        if not raw:
            if question.required:
                raise AnswerError(question, "required")
            continue
        items.append({"linkId": question.link_id, "text": question.text,
                      "answer": [_answer(question, raw)]})
    canonical = questionnaire.get("url") or f"Questionnaire/{questionnaire.get('id', '')}"
    return {
        "resourceType": "QuestionnaireResponse", "id": str(uuid.uuid4()),
        "questionnaire": canonical, "status": "completed",
        "subject": {"reference": subject}, "basedOn": [{"reference": based_on}],
        "authored": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        "language": language, "item": items,
    }


def _answer(question: Question, raw: str) -> dict[str, Any]:
    try:
        if question.type == "boolean":
            if raw not in ("true", "false"):
                raise ValueError(raw)
            return {"valueBoolean": raw == "true"}
        if question.type == "integer":
            return {"valueInteger": _integer(raw)}
        if question.type == "decimal":
            return {"valueDecimal": _decimal(raw)}
        if question.type == "date":
            return {"valueDate": date.fromisoformat(raw).isoformat()}
    except ValueError as exc:
        raise AnswerError(question, "invalid") from exc
    if question.type == "choice":
        chosen = next((c for c in question.choices if c.value == raw), None)
        if chosen is None:
            raise AnswerError(question, "invalid")
        return {"valueCoding": {"code": chosen.value, "display": chosen.label}}
    return {"valueString": raw[:2000]}


def _integer(raw: str) -> int:
    """A FHIR integer (32-bit) in ASCII digits; Python's int() also reads `1_0` and other
    scripts' digits."""
    if not _INTEGER.fullmatch(raw) or not -2**31 <= (value := int(raw)) < 2**31:
        raise ValueError(raw)
    return value


def _decimal(raw: str) -> float:
    """A finite decimal in ASCII digits; Python's float() also reads nan, inf and 1e999 (JSON
    holds none of them: NaN was stored as null)."""
    if not _DECIMAL.fullmatch(raw) or not math.isfinite(value := float(raw)):
        raise ValueError(raw)
    return value


def _flatten(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for item in items:
        if item.get("type") != "group":
            found.append(item)
        found.extend(_flatten(item.get("item") or []))
    return found


def _text(element: dict[str, Any], language: str, key: str = "text") -> str:
    for extension in (element.get(f"_{key}") or {}).get("extension") or []:
        if extension.get("url") != TRANSLATION:
            continue
        parts = {e.get("url"): e for e in extension.get("extension") or []}
        if (parts.get("lang") or {}).get("valueCode", "")[:2] == language:
            return str((parts.get("content") or {}).get("valueString") or "")
    return str(element.get(key) or "")


def _option(option: dict[str, Any], language: str) -> tuple[str, str]:
    if "valueCoding" in option:
        coding = option["valueCoding"]
        return str(coding.get("code")), _text(coding, language, "display") or \
            str(coding.get("code"))
    value = str(option.get("valueString") or option.get("valueInteger") or "")
    return value, _text(option, language, "valueString") or value
