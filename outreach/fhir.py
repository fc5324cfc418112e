"""FHIR R4 resources of outreach: a CommunicationRequest per planned send, a Communication per
attempt (completed, or not-done with a statusReason) and per patient reply (inResponseTo), and a
Consent per patient holding the channels they opted out of.

medium codes: http://terminology.hl7.org/CodeSystem/v3-ParticipationMode (SMSWRIT, EMAILWRIT,
DICTATE for a pre-recorded call, PHONE for a person's call).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from referrals.model import Referral

MEDIUM_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
NOT_DONE_SYSTEM = "http://terminology.hl7.org/CodeSystem/communication-not-done-reason"
REFLOOP_REASON_SYSTEM = "http://refloop.org/fhir/CodeSystem/outreach-not-done-reason"
PURPOSE_SYSTEM = "http://refloop.org/fhir/CodeSystem/outreach-purpose"
MESSAGE_ID_SYSTEM = "urn:refloop:outreach-message"
PROVIDER_ID_SYSTEM = "urn:refloop:provider-message-id"
CONTACT_MEDIUM_URL = "http://refloop.org/fhir/StructureDefinition/contact-medium"
OPT_OUT_SOURCE_URL = "http://refloop.org/fhir/StructureDefinition/opt-out-source"

MEDIUM = {"sms": ("SMSWRIT", "SMS message"), "email": ("EMAILWRIT", "email"),
          "voice": ("DICTATE", "dictated (pre-recorded voice)"), "phone": ("PHONE", "telephone")}
#: statusReason codes the HL7 example value set has; the others are Refloop codes
HL7_NOT_DONE = {"unknown", "system-error", "invalid-phone-number", "recipient-unavailable",
                "family-objection", "patient-objection"}


def communication_request(*, request_id: str, referral: Referral, purpose: str, channel: str,
                          status: str, authored: datetime, not_before: datetime | None = None,
                          expires_at: datetime | None = None, text: str = "") -> dict[str, Any]:
    period: dict[str, str] = {"start": instant(not_before or authored)}
    if expires_at:
        period["end"] = instant(expires_at)
    resource = {
        "resourceType": "CommunicationRequest", "id": request_id,
        "identifier": [{"system": MESSAGE_ID_SYSTEM, "value": request_id}],
        "basedOn": [{"reference": referral.service_request}],
        "about": [{"reference": f"Task/{referral.id}"}],
        "status": status,
        "category": [_purpose(purpose)],
        "subject": {"reference": referral.patient},
        "recipient": [{"reference": referral.patient}],
        "medium": [_medium(channel)],
        "occurrencePeriod": period,
        "authoredOn": instant(authored),
        "sender": {"display": "Refloop outreach"},
        "payload": [{"contentString": text}] if text else None,
    }
    return _clean(resource)


def communication(*, communication_id: str, request_id: str | None, referral: Referral,
                  purpose: str, channel: str, status: str, sent: datetime | None = None,
                  received: datetime | None = None, status_reason: str = "",
                  reason_text: str = "", text: str = "", provider_sid: str | None = None,
                  in_response_to: str | None = None, inbound: bool = False) -> dict[str, Any]:
    """An attempt (status completed / in-progress / not-done) or, with `inbound`, a reply."""
    resource = {
        "resourceType": "Communication", "id": communication_id,
        "identifier": [{"system": MESSAGE_ID_SYSTEM, "value": communication_id}]
        + ([{"system": PROVIDER_ID_SYSTEM, "value": provider_sid}] if provider_sid else []),
        "basedOn": [{"reference": f"CommunicationRequest/{request_id}"}] if request_id else None,
        "partOf": [{"reference": f"Task/{referral.id}"}],
        "inResponseTo": [{"reference": f"Communication/{in_response_to}"}]
        if in_response_to else None,
        "status": status,
        "statusReason": _reason(status_reason, reason_text) if status_reason else None,
        "category": [_purpose(purpose)],
        "medium": [_medium(channel)],
        "subject": {"reference": referral.patient},
        "about": [{"reference": f"Task/{referral.id}"},
                  {"reference": referral.service_request}],
        "sent": instant(sent) if sent else None,
        "received": instant(received) if received else None,
        "recipient": [{"display": "Refloop outreach"}] if inbound
        else [{"reference": referral.patient}],
        "sender": {"reference": referral.patient} if inbound
        else {"display": "Refloop outreach"},
        "payload": [{"contentString": text}] if text else None,
    }
    return _clean(resource)


def consent(*, consent_id: str, patient: str, denied: dict[str, tuple[datetime, str]],
            organization: str, now: datetime) -> dict[str, Any]:
    """One Consent per patient: permit contact, with a nested deny per opted-out channel."""
    return _clean({
        "resourceType": "Consent", "id": consent_id,
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0",
                                  "display": "Patient Consent"}]}],
        "patient": {"reference": patient},
        "dateTime": instant(now),
        "organization": [{"display": organization}],
        "policyRule": {"text": "Contact preferences for referral outreach (TCPA healthcare "
                               "exemption; revocation by any reasonable means, FCC 24-18)"},
        "provision": _clean({
            "type": "permit",
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                         "code": "TREAT"}],
            "provision": [{
                "type": "deny",
                "period": {"start": instant(at)},
                "extension": [{"url": CONTACT_MEDIUM_URL, "valueCoding": {
                    "system": MEDIUM_SYSTEM, "code": MEDIUM[channel][0]}},
                    {"url": OPT_OUT_SOURCE_URL, "valueString": source}],
            } for channel, (at, source) in sorted(denied.items())] or None,
        }),
    })


def instant(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _purpose(purpose: str) -> dict[str, Any]:
    return {"coding": [{"system": PURPOSE_SYSTEM, "code": purpose}], "text": purpose}


def _medium(channel: str) -> dict[str, Any]:
    code, display = MEDIUM.get(channel, MEDIUM["sms"])
    return {"coding": [{"system": MEDIUM_SYSTEM, "code": code, "display": display}]}


def _reason(code: str, text: str) -> dict[str, Any]:
    system = NOT_DONE_SYSTEM if code in HL7_NOT_DONE else REFLOOP_REASON_SYSTEM
    return _clean({"coding": [{"system": system, "code": code}], "text": text or None})


def _clean(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if v is not None}
