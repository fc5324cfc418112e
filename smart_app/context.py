"""The launch context from one token response: patient, encounter, fhirContext (all three
shapes of SMART 2.0/2.1/2.2), need_patient_banner, intent, the granted scope, and the user."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from smart_app.auth import LaunchError

RELATIVE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
USER_TYPES = ("Practitioner", "PractitionerRole")
#: the resource types whose user/-level grant means the user may see the whole panel's referrals
PANEL_TYPES = ("ServiceRequest", "Task")


#: RFC 6749 section 3.3 separates scope tokens with spaces; tabs and line breaks are taken as
#: spaces too, no other character is (a no-break space stays inside its token, which is then no
#: scope at all)
SCOPE_SEPARATORS = re.compile(r"[ \t\r\n]+")
#: SMART v2 permissions: some of c, r, u, d, s, in that order
V2_PERMISSIONS = re.compile(r"c?r?u?d?s?")


def split_scope(text: str) -> tuple[str, ...]:
    """The scope tokens of a token response's `scope`."""
    return tuple(token for token in SCOPE_SEPARATORS.split(text) if token)


def _allows(granted: str, levels: tuple[str, ...], resource_type: str, wanted: str, *,
            granular: bool = False) -> bool:
    """Whether one granted scope of one of `levels`, spelt exactly as SMART spells it (v1
    `read`, `*`, or v2 permissions in `cruds` order), covers `resource_type` with one of the
    `wanted` v2 permissions. A scope with a `?` restriction (SMART's granular scopes) counts
    only when `granular` is set: the app does not evaluate the restriction, so such a scope grants
    nothing it would widen (as for the FHIR facade, docs/security.md), while a read from the
    EHR itself is the EHR's to restrict."""
    kind, _, rest = granted.partition("/")
    rtype, dot, perms = rest.partition(".")
    if granular:
        perms = perms.split("?", 1)[0]
    if kind not in levels or not dot or rtype not in (resource_type, "*"):
        return False
    if perms in ("read", "*"):
        return True
    return bool(perms) and V2_PERMISSIONS.fullmatch(perms) is not None \
        and bool(set(perms) & set(wanted))


@dataclass(frozen=True)
class LaunchContext:
    user: str
    patient: str = ""  # "Patient/123" or ""
    encounter: str = ""
    fhir_context: tuple[str, ...] = ()  # relative references only
    need_patient_banner: bool = True
    intent: str = ""
    scope: tuple[str, ...] = ()
    user_display: str = ""
    patient_display: str = ""
    notes: tuple[str, ...] = field(default=())

    def granted(self, scope: str) -> bool:
        return scope in self.scope

    @property
    def patient_limited(self) -> bool:
        """The EHR limited the launch to one patient: it granted patient/ scopes (or scopes of
        no user/ or system/ level at all), and none lets the user read or search referrals
        beyond that patient: no user/ (or system/) scope for ServiceRequest, Task or every type.
        A user/ scope for another type (Practitioner, to show the user's name) does not lift the
        limit the EHR put on the referrals; a launch with user/ scopes only is not limited.
        (No scope in the token response means the scopes asked for.)"""
        levels = {s.partition("/")[0] for s in self.scope if "/" in s}
        # a patient/ scope in any spelling keeps the limit (a malformed one must not lift it);
        # only exactly spelt user/ and system/ scopes are the user's own level
        patient = any(level.lower() == "patient" for level in levels)
        limited = patient or not levels & {"user", "system"}
        return bool(self.scope) and limited and not any(
            _allows(s, ("user", "system"), resource, "rs")
            for s in self.scope for resource in PANEL_TYPES)

    def can_read(self, resource_type: str) -> bool:
        """Whether the granted scopes (v1 or v2) let the user read `resource_type`."""
        return any(_allows(s, ("user", "patient"), resource_type, "r", granular=True)
                   for s in self.scope)

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.user, "patient": self.patient, "encounter": self.encounter,
                "fhir_context": list(self.fhir_context),
                "need_patient_banner": self.need_patient_banner, "intent": self.intent,
                "scope": list(self.scope), "user_display": self.user_display,
                "patient_display": self.patient_display, "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LaunchContext:
        return cls(user=data["user"], patient=data.get("patient", ""),
                   encounter=data.get("encounter", ""),
                   fhir_context=tuple(data.get("fhir_context", ())),
                   need_patient_banner=bool(data.get("need_patient_banner", True)),
                   intent=data.get("intent", ""), scope=tuple(data.get("scope", ())),
                   user_display=data.get("user_display", ""),
                   patient_display=data.get("patient_display", ""),
                   notes=tuple(data.get("notes", ())))


def from_token_response(token: dict[str, Any], claims: dict[str, Any], iss: str
                        ) -> LaunchContext:
    """Read this launch's context; the user comes only from the validated id_token."""
    user = user_reference(claims, iss)
    patient = str(token.get("patient") or "")
    encounter = str(token.get("encounter") or "")
    banner = token.get("need_patient_banner", True)
    return LaunchContext(
        user=user,
        patient=f"Patient/{patient}" if patient and "/" not in patient else patient,
        encounter=f"Encounter/{encounter}" if encounter and "/" not in encounter else encounter,
        fhir_context=parse_fhir_context(token.get("fhirContext")),
        need_patient_banner=banner if isinstance(banner, bool) else str(banner) == "true",
        intent=str(token.get("intent") or ""),
        scope=split_scope(str(token.get("scope") or "")),
    )


def user_reference(claims: dict[str, Any], iss: str) -> str:
    """`fhirUser` (absolute, or relative to iss) as `Type/id`; Practitioner or PractitionerRole."""
    raw = str(claims.get("fhirUser") or claims.get("profile") or "")
    if not raw:
        raise LaunchError("the EHR's id_token names no fhirUser; grant the 'openid fhirUser' "
                          "scopes to this app")
    base = iss.rstrip("/") + "/"
    relative = raw[len(base):] if raw.startswith(base) else raw
    if relative.startswith(("http://", "https://")):
        parts = relative.rstrip("/").split("/")
        relative = "/".join(parts[-2:])
    if not RELATIVE.match(relative) or relative.split("/")[0] not in USER_TYPES:
        raise LaunchError(f"this app is for clinicians and coordinators; the EHR user is a "
                          f"{relative.split('/')[0] or 'unknown'} resource")
    return relative


def parse_fhir_context(value: Any) -> tuple[str, ...]:
    """References from fhirContext: 2.0 strings, 2.1 {reference}, 2.2 {reference|canonical|
    identifier}; only relative `Type/id` references are kept (no following other servers)."""
    if not isinstance(value, list):
        return ()
    found = []
    for item in value:
        reference = item if isinstance(item, str) else \
            item.get("reference") if isinstance(item, dict) else None
        if isinstance(reference, str) and RELATIVE.match(reference):
            found.append(reference)
    return tuple(found)
