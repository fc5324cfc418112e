"""Reading PAS responses: the decision per item comes from the reviewAction extension only
(never from outcome, status or preAuthRef); business errors from ClaimResponse.error.
$inquire replies come as a Parameters (2.2.1) or one Bundle (2.0.1)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

PAS = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"
REVIEW_ACTION = PAS + "extension-reviewAction"
REVIEW_ACTION_CODE = PAS + "extension-reviewActionCode"
X12_306 = "https://codesystem.x12.org/005010/306"
ITEM_PERIOD = PAS + "extension-itemPreAuthPeriod"

#: X12 306 (HCR01) review action codes -> item status
ITEM_STATUS = {"A1": "approved", "A2": "partially-approved", "A3": "denied", "A4": "pended",
               "A6": "modified", "C": "cancelled", "CT": "contact-payer",
               "NA": "no-auth-required"}
GRANTED = frozenset({"A1", "A6", "NA"})


class ResponseError(ValueError):
    """The payer's reply is not a PAS response we can read (protocol error)."""


@dataclass(frozen=True)
class ItemDecision:
    sequence: int
    code: str            # X12 306 code, "" when the item carries no reviewAction
    status: str          # approved | denied | pended | modified | ... | unknown
    auth_number: str = ""
    reasons: tuple[str, ...] = ()
    period: tuple[str, str] = ("", "")
    modification: dict[str, Any] | None = None  # the addItem that states what was authorized

    def to_json(self) -> dict[str, Any]:
        return {"sequence": self.sequence, "code": self.code, "status": self.status,
                "auth_number": self.auth_number, "reasons": list(self.reasons),
                "period": list(self.period), "modification": self.modification}


@dataclass(frozen=True)
class PayerError:
    code: str
    display: str = ""
    followup: str = ""
    element: str = ""
    path: str = ""


@dataclass(frozen=True)
class Decision:
    #: approved | modified | partially-approved | no-auth-required | denied | pending |
    #: contact-payer | partial | cancelled | error | unknown
    overall: str
    items: tuple[ItemDecision, ...]
    errors: tuple[PayerError, ...] = ()
    outcome: str = ""
    disposition: str = ""
    created: str = ""
    request_reference: str = ""
    request_identifiers: tuple[tuple[str, str], ...] = ()
    identifiers: tuple[tuple[str, str], ...] = ()
    pre_auth_ref: str = ""  # shown, never used to decide
    #: the patient it is about: its reference, and the identifiers given on the reference or
    #: on the Patient the reply holds for it
    patient_reference: str = ""
    patient_identifiers: tuple[tuple[str, str], ...] = ()
    #: the Patient the reply holds for it (a Bundle entry, or contained in the ClaimResponse)
    patient_held: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    claim_response: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def auth_number(self) -> str:
        numbers = [i.auth_number for i in self.items if i.auth_number]
        return numbers[0] if numbers else ""

    def summary(self) -> str:
        parts = [f"{i.sequence}:{i.code or '-'}" for i in self.items]
        text = f"{self.overall} ({', '.join(parts)})" if parts else self.overall
        if self.errors:
            text += "; payer errors: " + ", ".join(
                f"{e.code} {e.display}".strip() for e in self.errors)
        return text

    def to_json(self) -> dict[str, Any]:
        return {"overall": self.overall, "items": [i.to_json() for i in self.items],
                "errors": [e.__dict__ for e in self.errors], "outcome": self.outcome,
                "disposition": self.disposition, "auth_number": self.auth_number,
                "created": self.created}


def parse_response_bundle(bundle: dict[str, Any]) -> Decision:
    """The decision in a PAS response Bundle (first entry: the ClaimResponse)."""
    if bundle.get("resourceType") != "Bundle":
        raise ResponseError(f"expected a Bundle, got {bundle.get('resourceType')!r}")
    entries = bundle.get("entry") or []
    first = entries[0].get("resource", {}) if entries else {}
    if first.get("resourceType") != "ClaimResponse":
        raise ResponseError("the response Bundle does not start with a ClaimResponse")
    return from_claim_response(first)


def from_claim_response(claim_response: dict[str, Any],
                        patients: dict[str, dict[str, Any]] | None = None) -> Decision:
    """The decision in a ClaimResponse; `patients` (reference or fullUrl -> Patient) are the
    Patients of the reply it came in, read (like a Patient contained in the ClaimResponse) for
    the identifiers of the one it is about."""
    add_items = claim_response.get("addItem", [])
    items = tuple(_item(item, add_items) for item in claim_response.get("item", []))
    if not items:
        header = _review_action(claim_response.get("adjudication", []))
        if header is not None:
            items = (_decided(0, header, None),)
    errors = tuple(_error(e) for e in claim_response.get("error", []))
    outcome = claim_response.get("outcome", "")
    request = claim_response.get("request") or {}
    patient = claim_response.get("patient") or {}
    named = _held_patient(claim_response, str(patient.get("reference", "")), patients or {})
    return Decision(
        overall=overall(items, outcome, errors), items=items, errors=errors, outcome=outcome,
        disposition=claim_response.get("disposition", ""),
        created=claim_response.get("created", ""),
        request_reference=request.get("reference", ""),
        request_identifiers=_identifiers([request.get("identifier")] if "identifier" in request
                                         else []),
        identifiers=_identifiers(claim_response.get("identifier", [])),
        pre_auth_ref=claim_response.get("preAuthRef", ""),
        patient_reference=patient.get("reference", ""),
        patient_identifiers=_identifiers([patient.get("identifier"), *named.get(
            "identifier", [])]),
        patient_held=named, claim_response=claim_response)


def _held_patient(claim_response: dict[str, Any], reference: str,
                  patients: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The Patient a `patient` reference names in the reply: `#id` a contained one, else a
    Bundle entry (by fullUrl or `Patient/<id>`)."""
    if not reference.startswith("#"):
        return patients.get(reference) or {}
    return next((r for r in claim_response.get("contained") or [] if isinstance(r, dict)
                 and r.get("resourceType") == "Patient" and f"#{r.get('id', '')}" == reference),
                {})


def stated_reasons(decision: Decision) -> str:
    """What the payer says against the request, in its codes and words: each error (X12 901
    code and display, where, the follow-up action), each review reason code, the
    disposition; "" when it says nothing."""
    parts = [_error_text(e) for e in decision.errors]
    parts += [f"reason {r}" for r in dict.fromkeys(r for i in decision.items for r in i.reasons)]
    parts.append(decision.disposition.strip())
    return "; ".join(p for p in parts if p)


def _error_text(error: PayerError) -> str:
    text = f"error {error.code} {error.display}".strip()
    if error.path or error.element:
        text += f" at {error.path or error.element}"
    return text + (f" (follow-up {error.followup})" if error.followup else "")


def overall(items: tuple[ItemDecision, ...], outcome: str,
            errors: tuple[PayerError, ...]) -> str:
    """The request's state from its items' X12 306 codes; each outcome keeps its own name
    (contact payer, modified, partially approved, no authorization required are not folded
    into approved or partial)."""
    codes = [i.code for i in items]
    if outcome == "error" or (errors and not items):
        return "error"
    if "A4" in codes or (outcome == "queued" and not any(codes)):  # queued: 2.0.1 payers
        return "pending"
    if not codes or "" in codes:
        return "unknown"  # an item without reviewAction is never treated as approved
    live = [c for c in codes if c != "C"]
    if not live:
        return "cancelled"
    if "CT" in live:
        return "contact-payer"
    for state, allowed in SAME_STATE:
        if all(c in allowed for c in live):
            return state
    if all(c in GRANTED | {"A2"} for c in live):
        return "partially-approved"
    return "partial"


#: (state, the codes every live item must have for it), first match wins
SAME_STATE = (("denied", frozenset({"A3"})), ("no-auth-required", frozenset({"NA"})),
              ("approved", frozenset({"A1", "NA"})), ("modified", GRANTED))


def merge_items(decision: Decision, earlier: list[ItemDecision]) -> Decision:
    """A reply may carry only the items that changed: keep the earlier decision of the others."""
    answered = {i.sequence for i in decision.items}
    kept = tuple(i for i in earlier if i.sequence not in answered)
    if not kept or not decision.items or decision.items[0].sequence == 0:
        return decision
    items = tuple(sorted(decision.items + kept, key=lambda i: i.sequence))
    return replace(decision, items=items,
                   overall=overall(items, decision.outcome, decision.errors))


def unknown_sequences(decision: Decision, requested: set[int]) -> list[int]:
    """Item sequences the reply speaks of that the request did not contain (0: header level)."""
    return sorted({i.sequence for i in decision.items} - requested - {0})


def names_claim(decision: Decision, full_url: str, claim_id: str,
                identifier: str) -> bool | None:
    """Does the ClaimResponse say it answers our Claim (its fullUrl, `Claim/<id>` relative or
    absolute, or its identifier)? None when it names no request at all."""
    reference = decision.request_reference
    identifiers = [v for _, v in decision.request_identifiers]
    if not reference and not identifiers:
        return None
    by_reference = bool(reference) and (reference == full_url or (bool(claim_id) and (
        reference == f"Claim/{claim_id}" or reference.endswith(f"/Claim/{claim_id}"))))
    by_identifier = bool(identifier) and identifier in (
        *identifiers, *(v for _, v in decision.identifiers))
    return by_reference or by_identifier


def names_patient(decision: Decision, reference: str, patient: dict[str, Any]) -> bool:
    """Is the ClaimResponse about our patient: the Claim's patient `reference` (its fullUrl),
    `Patient/<id>` relative or absolute, or one of the Patient's identifiers (the same value,
    and the same system when both name one)? A ClaimResponse that names no patient (R4 and
    PAS make `patient` 1..1; a display or an empty identifier says nothing) is not about ours:
    nothing shows whose decision it is."""
    theirs = decision.patient_reference
    patient_id = str(patient.get("id", ""))
    by_reference = bool(theirs) and (theirs == reference or (bool(patient_id) and (
        theirs == f"Patient/{patient_id}" or theirs.endswith(f"/Patient/{patient_id}"))))
    ours = _identifiers(patient.get("identifier", []))
    return by_reference or any(_same_identifier(a, b) for a in ours
                               for b in decision.patient_identifiers)


def patient_mismatch(decision: Decision, patient: dict[str, Any]) -> str:
    """What the Patient the reply holds for the ClaimResponse says otherwise than our
    `patient` ("" when nothing): another family name, another birth date. Our identifier on
    another person is a payer that mixed up its members. Given names are not compared (a
    member file may spell them otherwise), nor what either side leaves out."""
    held = decision.patient_held
    differs = []
    theirs, ours = _families(held), _families(patient)
    if theirs and ours and not theirs & ours:
        differs.append("family name")
    born = (str(held.get("birthDate", ""))[:10], str(patient.get("birthDate", ""))[:10])
    if all(born) and born[0] != born[1]:
        differs.append("birth date")
    return " and ".join(differs)


def _families(patient: dict[str, Any]) -> set[str]:
    return {" ".join(str(n["family"]).split()).casefold() for n in patient.get("name") or []
            if isinstance(n, dict) and n.get("family")}


def _same_identifier(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """One value under one assigner: an MRN of another system that happens to be spelt like
    ours is another patient's."""
    return a[1] == b[1] and (not a[0] or not b[0] or a[0] == b[0])


def contradiction(decision: Decision) -> str:
    """Why a ClaimResponse contradicts itself ("" when it does not): an item decided twice
    with different codes, or a header-level decision (2.2.1, HCR of 2000E) that denies what
    its items grant or grants what they deny."""
    codes: dict[int, set[str]] = {}
    for item in decision.items:
        codes.setdefault(item.sequence, set()).add(item.code or "-")
    twice = {s: c for s, c in codes.items() if len(c) > 1}
    if twice:
        return "; ".join(f"item {s} is decided twice ({', '.join(sorted(c))})"
                         for s, c in sorted(twice.items()))
    action = _review_action(decision.claim_response.get("adjudication", []))
    header = _decided(0, action, None).code if action is not None else ""
    item_codes = {i.code for i in decision.items if i.sequence}
    if header and item_codes and (
            (header == "A3" and item_codes & GRANTED) or
            (header in GRANTED and item_codes == {"A3"})):
        return (f"its header decision ({header}) contradicts its items ("
                + ", ".join(f"{i.sequence}:{i.code or '-'}" for i in decision.items) + ")")
    return ""


def item_from_json(data: dict[str, Any]) -> ItemDecision:
    period = data.get("period") or ("", "")
    return ItemDecision(int(data["sequence"]), data.get("code", ""), data.get("status", ""),
                        data.get("auth_number", ""), tuple(data.get("reasons", [])),
                        (period[0], period[1]), data.get("modification"))


def _item(item: dict[str, Any], add_items: list[dict[str, Any]]) -> ItemDecision:
    sequence = int(item.get("itemSequence", 0))
    action = _review_action(item.get("adjudication", []))
    modification = next((a for a in add_items if sequence in a.get("itemSequence", [])), None)
    decided = _decided(sequence, action, modification)
    period = _extension(item, ITEM_PERIOD)
    if period is not None and "valuePeriod" in period:
        value = period["valuePeriod"]
        decided = ItemDecision(**{**decided.__dict__,
                                  "period": (value.get("start", ""), value.get("end", ""))})
    return decided


def _decided(sequence: int, action: dict[str, Any] | None,
             modification: dict[str, Any] | None) -> ItemDecision:
    if action is None:
        return ItemDecision(sequence, "", "unknown", modification=modification)
    code, number, reasons = "", "", []
    for part in action.get("extension", []):
        url = part.get("url")
        if url in (REVIEW_ACTION_CODE, "code"):
            code = _code(part.get("valueCodeableConcept", {}))
        elif url == "number":
            number = part.get("valueString", "")
        elif url == "reasonCode":
            reasons.append(_code(part.get("valueCodeableConcept", {})))
    status = ITEM_STATUS.get(code, "unknown")
    return ItemDecision(sequence, code if status != "unknown" else "", status, number,
                        tuple(reasons), modification=modification)


def _review_action(adjudications: list[dict[str, Any]]) -> dict[str, Any] | None:
    for adjudication in adjudications:
        found = _extension(adjudication, REVIEW_ACTION)
        if found is not None:
            return found
    return None


def _extension(node: dict[str, Any], url: str) -> dict[str, Any] | None:
    return next((e for e in node.get("extension", []) if e.get("url") == url), None)


def _code(concept: dict[str, Any]) -> str:
    for coding in concept.get("coding", []):
        if coding.get("code"):
            return str(coding["code"])
    return ""


def _error(error: dict[str, Any]) -> PayerError:
    coding = (error.get("code", {}).get("coding") or [{}])[0]
    values = {e.get("url", "").rsplit("-", 1)[-1]: e for e in error.get("extension", [])}
    followup = _code(values.get("errorFollowupAction", {}).get("valueCodeableConcept", {}))
    return PayerError(code=coding.get("code", ""), display=coding.get("display", ""),
                      followup=followup,
                      element=_string(values.get("errorElement", {})),
                      path=values.get("errorPath", {}).get("valueString", ""))


def _string(extension: dict[str, Any]) -> str:
    """valueString, or the first nested one (errorElement is complex in 2.2.1)."""
    if "valueString" in extension:
        return str(extension["valueString"])
    return next((str(e["valueString"]) for e in extension.get("extension", [])
                 if "valueString" in e), "")


def _identifiers(identifiers: list[Any]) -> tuple[tuple[str, str], ...]:
    return tuple((i.get("system", ""), i.get("value", "")) for i in identifiers
                 if isinstance(i, dict) and i.get("value"))


def parse_inquire_reply(reply: dict[str, Any]) -> list[Decision]:
    """2.2.1: a Parameters with 0..* Bundles (named return or responseBundle); 2.0.1: a Bundle."""
    kind = reply.get("resourceType")
    if kind == "Bundle":
        return [parse_response_bundle(reply)]
    if kind == "Parameters":
        return [parse_response_bundle(p["resource"]) for p in reply.get("parameter", [])
                if isinstance(p.get("resource"), dict)
                and p["resource"].get("resourceType") == "Bundle"]
    raise ResponseError(f"an $inquire reply must be a Parameters or a Bundle, got {kind!r}")
