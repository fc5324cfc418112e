"""Build the PAS $submit request Bundle from a referral's inputs.

Shape: type collection, the Claim first, every referenced resource once with a urn:uuid fullUrl
(stable per source resource), references as those urns, Bundle identifier and timestamp, member id
on the Coverage, payer and provider identifiers, items with serviceItemRequestType,
certificationType, category and place of service, ICD-10-CM diagnoses, expedited marked the same
way on Claim.priority and the level of service.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pas_client.config import Organization, PasConfig, PayerConfig
from pas_client.conformance.finding import Finding
from pas_client.inputs import ClaimInputs, Resource

PAS = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"
X12 = "https://codesystem.x12.org/005010/"
NPI = "http://hl7.org/fhir/sid/us-npi"
TIN = "http://terminology.hl7.org/NamingSystem/USEIN"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
POS = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"
BUNDLE_ID_SYSTEM = "urn:refloop:pas:bundle"
ITEM_TRACE_SYSTEM = "urn:refloop:pas:item"
EXPEDITED = frozenset({"urgent", "asap", "stat"})
RELATIONSHIP_X12 = {"self": "18", "spouse": "01", "child": "19", "other": "G8"}
NAMESPACE = uuid.UUID("8f3c8c4e-2a0b-4b7e-9a43-6f1f2f5b7d10")


@dataclass(frozen=True)
class BuiltRequest:
    bundle: dict[str, Any]
    bundle_identifier: str
    claim_identifier: str
    findings: tuple[Finding, ...]


def urn_for(kind: str, rid: str, scope: str = "") -> str:
    """A stable urn:uuid for one source resource (the same instance keeps its GUID)."""
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, f'{scope}|{kind}/{rid}')}"


def coding(system: str, code: str, display: str = "") -> dict[str, Any]:
    found = {"system": system, "code": code}
    return {**found, "display": display} if display else found


def concept(system: str, code: str, display: str = "") -> dict[str, Any]:
    return {"coding": [coding(system, code, display)]}


def ext(name: str, **value: Any) -> dict[str, Any]:
    return {"url": PAS + name, **value}


def profile(name: str) -> dict[str, Any]:
    return {"profile": [PAS + name]}


def build_request_bundle(inputs: ClaimInputs, payer: PayerConfig, config: PasConfig, *,
                         now: datetime | None = None, scope: str = "") -> BuiltRequest:
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    stamp = moment.isoformat(timespec="seconds").replace("+00:00", "Z")
    findings = list(inputs.findings)
    urls = Urls(scope)
    patient = to_beneficiary(inputs.patient)
    insurer = to_insurer(payer, inputs.coverage, findings)
    requestor = to_requestor(config.organization, findings)
    coverage = to_coverage(inputs.coverage, urls, patient, insurer, findings)
    practitioner = to_practitioner(inputs.practitioner) if inputs.practitioner else None
    service_request = to_service_request(inputs.service_request, urls, patient, coverage,
                                         practitioner)
    claim_identifier = uuid.uuid4().hex[:20].upper()
    claim = build_claim(inputs, config, payer, urls, stamp, claim_identifier, patient=patient,
                        insurer=insurer, requestor=requestor, coverage=coverage,
                        service_request=service_request, findings=findings)
    resources = [r for r in (patient, insurer, requestor, coverage, service_request,
                             practitioner) if r]
    bundle_identifier = str(uuid.uuid4())
    bundle = {
        "resourceType": "Bundle", "meta": profile("profile-pas-request-bundle"),
        "identifier": {"system": BUNDLE_ID_SYSTEM, "value": bundle_identifier},
        "type": "collection", "timestamp": stamp,
        "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": claim}]
        + [{"fullUrl": urls.of(r), "resource": r} for r in resources],
    }
    return BuiltRequest(bundle, bundle_identifier, claim_identifier, tuple(findings))


class Urls:
    def __init__(self, scope: str) -> None:
        self.scope = scope

    def of(self, resource: Resource) -> str:
        return urn_for(resource["resourceType"], str(resource["id"]), self.scope)

    def ref(self, resource: Resource) -> dict[str, str]:
        return {"reference": self.of(resource)}


def to_beneficiary(patient: Resource) -> Resource:
    kept: dict[str, Any] = {k: patient[k] for k in ("identifier", "name", "gender",
                                                    "birthDate", "address", "telecom")
                            if k in patient}
    return {"resourceType": "Patient", "id": patient["id"], "meta": profile(
        "profile-beneficiary"), **kept}


def to_insurer(payer: PayerConfig, coverage: Resource | None,
               findings: list[Finding]) -> Resource:
    payer_id = payer.payer_id or _payor_identifier(coverage)
    if not payer_id:
        findings.append(Finding("error", "Organization(insurer).identifier", "input",
                                f"no payer id for {payer.name}: set payer_id in its [[payers]] "
                                "entry"))
    identifiers = [{"type": concept("http://hl7.org/fhir/us/carin-bb/CodeSystem/"
                                    "C4BBIdentifierType", "payerid"), "value": payer_id}]
    return {"resourceType": "Organization", "id": f"payer-{_slug(payer.name)}",
            "meta": profile("profile-insurer"), "identifier": identifiers if payer_id else [],
            "active": True, "type": [concept(X12 + "98", "PR", "Payer")], "name": payer.name}


def to_requestor(organization: Organization, findings: list[Finding]) -> Resource:
    identifiers = []
    if organization.npi:
        identifiers.append({"system": NPI, "value": organization.npi})
    if organization.tin:
        identifiers.append({"system": TIN, "value": organization.tin})
    if not organization.npi or not organization.name:
        findings.append(Finding("error", "Organization(requestor)", "input",
                                "our organisation needs a name and an NPI: set "
                                "organization_name and organization_npi in [pas]"))
    return {"resourceType": "Organization", "id": "requestor", "meta": profile(
        "profile-requestor"), "identifier": identifiers, "active": True,
        "type": [concept(X12 + "98", "1P", "Provider")], "name": organization.name or "unknown"}


def to_coverage(coverage: Resource | None, urls: Urls, patient: Resource, insurer: Resource,
                findings: list[Finding]) -> Resource | None:
    if coverage is None:
        return None
    member = coverage.get("subscriberId") or next(
        (i.get("value") for i in coverage.get("identifier", [])
         if any(c.get("code") == "MB" for c in i.get("type", {}).get("coding", []))), "")
    if not member:
        findings.append(Finding("error", "Coverage.identifier:memberid", "input",
                                "the Coverage has no member id (subscriberId or an MB "
                                "identifier); the payer looks the member up by it"))
    relation = _relationship(coverage)
    built: Resource = {
        "resourceType": "Coverage", "id": coverage["id"], "meta": profile("profile-coverage"),
        "identifier": [{"type": concept("http://terminology.hl7.org/CodeSystem/v2-0203", "MB"),
                        "value": member}] if member else [],
        "status": "active", "beneficiary": urls.ref(patient),
        "relationship": {"coding": [coding("http://terminology.hl7.org/CodeSystem/"
                                           "subscriber-relationship", relation),
                                    coding(X12 + "1069", RELATIONSHIP_X12.get(relation, "G8"))]},
        "payor": [urls.ref(insurer)],
    }
    if member:
        built["subscriberId"] = member
    if coverage.get("period"):
        built["period"] = coverage["period"]
    if relation != "self":
        built["subscriber"] = urls.ref(patient)
        findings.append(Finding("warning", "Coverage.subscriber", "input",
                                "the patient is not the subscriber; check the subscriber sent"))
    return built


def to_practitioner(practitioner: Resource) -> Resource:
    kept: dict[str, Any] = {k: practitioner[k] for k in ("identifier", "name", "telecom")
                            if k in practitioner}
    return {"resourceType": "Practitioner", "id": practitioner["id"],
            "meta": profile("profile-practitioner"), **kept}


def to_service_request(request: Resource, urls: Urls, patient: Resource,
                       coverage: Resource | None, practitioner: Resource | None) -> Resource:
    built: Resource = {
        "resourceType": "ServiceRequest", "id": request["id"],
        "meta": profile("profile-servicerequest"), "status": request.get("status", "active"),
        "intent": "order", "subject": urls.ref(patient),
    }
    for key in ("category", "priority", "code", "reasonCode", "authoredOn"):
        if key in request:
            built[key] = request[key]
    timing = _occurrence_timing(request)
    if timing:
        built["occurrenceTiming"] = timing
    requester = request.get("requester") or {}
    if practitioner is not None:
        built["requester"] = urls.ref(practitioner)
    elif requester.get("display"):
        built["requester"] = {"display": requester["display"]}
    if coverage is not None:
        built["insurance"] = [urls.ref(coverage)]
    return built


def _occurrence_timing(request: Resource) -> Resource | None:
    """PASServiceRequest allows occurrence[x] as Timing only, and PASTiming bounds only as a
    Duration: a dateTime becomes the Timing's event, and so does the start of a Period (a
    referral's validity, e.g. HL7 v2 RF1-7/8), the date the service is asked for from."""
    if "occurrenceTiming" in request:
        return dict(request["occurrenceTiming"])
    moment = request.get("occurrenceDateTime") or \
        (request.get("occurrencePeriod") or {}).get("start")
    return {"event": [moment]} if moment else None


def build_claim(inputs: ClaimInputs, config: PasConfig, payer: PayerConfig, urls: Urls,
                stamp: str, claim_identifier: str, *, patient: Resource, insurer: Resource,
                requestor: Resource, coverage: Resource | None, service_request: Resource,
                findings: list[Finding]) -> Resource:
    expedited = inputs.priority in EXPEDITED
    diagnoses = _diagnoses(inputs.service_request, findings)
    extensions = [ext("extension-levelOfServiceCode", valueCodeableConcept=concept(
        X12 + "1338", "U" if expedited else "E", "Urgent" if expedited else "Elective"))]
    claim: Resource = {
        "resourceType": "Claim", "id": claim_identifier.lower(),
        "meta": profile("profile-claim"), "extension": extensions,
        "identifier": [{"system": f"urn:trnorg:{config.organization.npi or 'unknown'}",
                        "value": claim_identifier}],
        "status": "active", "type": concept("http://terminology.hl7.org/CodeSystem/claim-type",
                                            config.claim_type),
        "use": "preauthorization", "patient": urls.ref(patient), "created": stamp,
        "insurer": urls.ref(insurer), "provider": urls.ref(requestor),
        "priority": concept("http://terminology.hl7.org/CodeSystem/processpriority",
                            "stat" if expedited else "normal"),
        "diagnosis": diagnoses,
        "item": [build_item(1, inputs.service_request, service_request, config, urls,
                            len(diagnoses))],
    }
    if coverage is not None:
        claim["insurance"] = [{"sequence": 1, "focal": True, "coverage": urls.ref(coverage)}]
    if not diagnoses:
        del claim["diagnosis"]
    return claim


def build_item(sequence: int, source: Resource, service_request: Resource, config: PasConfig,
               urls: Urls, diagnoses: int) -> Resource:
    item: Resource = {
        "extension": [
            ext("extension-serviceItemRequestType", valueCodeableConcept=concept(
                X12 + "1525", config.request_type)),
            ext("extension-certificationType", valueCodeableConcept=concept(
                X12 + "1322", "I", "Initial")),
            ext("extension-itemTraceNumber", valueIdentifier={
                "system": ITEM_TRACE_SYSTEM, "value": uuid.uuid4().hex[:16].upper()}),
            ext("extension-requestedService", valueReference=urls.ref(service_request)),
        ],
        "sequence": sequence,
        "category": concept(X12 + "1365", config.service_category),
        "productOrService": product_or_service(source, config),
        "locationCodeableConcept": concept(POS, config.place_of_service),
    }
    if diagnoses:
        item["diagnosisSequence"] = list(range(1, diagnoses + 1))
    return item


def product_or_service(request: Resource, config: PasConfig) -> dict[str, Any]:
    """A billing code: CPT/HCPCS on the order, a configured mapping, else X12 1365 category."""
    codings = (request.get("code") or {}).get("coding", [])
    for c in codings:
        if c.get("system") in (CPT, HCPCS):
            return {"coding": [c]}
    for c in codings:
        mapped = config.service_codes.get(str(c.get("code")))
        if mapped:
            return concept(CPT, mapped)
    return concept(X12 + "1365", config.service_category)


def _diagnoses(request: Resource, findings: list[Finding]) -> list[dict[str, Any]]:
    found = [c for concept_ in request.get("reasonCode", []) for c in concept_.get("coding", [])
             if c.get("system") == ICD10CM and c.get("code")]
    if not found:
        findings.append(Finding("warning", "ServiceRequest.reasonCode", "input",
                                "no ICD-10-CM diagnosis on the order; payers expect one"))
    return [{"sequence": i, "diagnosisCodeableConcept": {"coding": [
        coding(ICD10CM, c["code"], c.get("display", ""))]}} for i, c in
        enumerate(found[:12], start=1)]


def _payor_identifier(coverage: Resource | None) -> str:
    for payor in (coverage or {}).get("payor", []):
        value = (payor.get("identifier") or {}).get("value")
        if value:
            return str(value)
    return ""


def _relationship(coverage: Resource) -> str:
    for c in (coverage.get("relationship") or {}).get("coding", []):
        if c.get("code") in RELATIONSHIP_X12:
            return str(c["code"])
    subscriber = (coverage.get("subscriber") or {}).get("reference", "")
    beneficiary = (coverage.get("beneficiary") or {}).get("reference", "")
    return "self" if not subscriber or subscriber == beneficiary else "other"


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-") or "payer"
