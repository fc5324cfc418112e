"""Build the PAS $submit request Bundle from a referral's inputs.

Shape: type collection, the Claim first, every referenced resource once with a urn:uuid fullUrl
(stable per source resource), references as those urns, Bundle identifier and timestamp, member id
on the Coverage, the subscriber and relationship from the Coverage, payer and provider
identifiers, the requested performer as careTeam (parties.py), items with
serviceItemRequestType, certificationType, category, place of service, the order's dates and
quantity (order.py), ICD-10-CM diagnoses, expedited marked the same way on Claim.priority and the
level of service.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pas_client.config import Organization, PasConfig, PayerConfig
from pas_client.conformance.finding import Finding
from pas_client.inputs import PERFORMER_TYPES, ClaimInputs, Resource
from pas_client.order import Occurrence, to_occurrence, to_quantity, visits
from pas_client.parties import (
    care_team_member,
    contact_points,
    to_organization,
    to_person,
    to_practitioner,
    to_role,
)

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
#: subscriber-relationship code -> X12 1069 (individual relationship)
RELATIONSHIP_X12 = {"self": "18", "spouse": "01", "child": "19", "common": "53",
                    "parent": "G8", "injured": "G8", "other": "G8"}
MEMBER_SYSTEM = "urn:refloop:pas:member"
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
    member = member_id(inputs.coverage)
    member_system = f"{MEMBER_SYSTEM}:{payer.payer_id or _slug(payer.name)}"
    patient = to_person(inputs.patient, "profile-beneficiary", (member_system, member),
                        findings, "Patient")
    insurer = to_insurer(payer, inputs.coverage, findings)
    requestor = to_requestor(config.organization, findings)
    subscriber = to_subscriber(inputs, (member_system, member), findings)
    coverage = to_coverage(inputs.coverage, urls, patient, subscriber, insurer, member,
                           findings)
    practitioner = to_requester(inputs.practitioner, findings)
    team, team_resources = build_care_team(inputs, urls, findings)
    quantity = to_quantity(inputs.service_request, findings)
    occurrence = to_occurrence(inputs.service_request, visits(quantity), findings,
                               moment.date())
    service_request = to_service_request(
        inputs.service_request, urls, patient, coverage, practitioner, occurrence, quantity,
        [m["provider"] for m in team])
    service_request["code"] = with_billing_code(inputs.service_request, config)
    if inputs.coverage_information:  # CRD resp-46/48: keep sending what the payer said
        service_request["extension"] = [with_coverage(inputs.coverage_information[0], urls,
                                                      coverage)]
    claim_identifier = uuid.uuid4().hex[:20].upper()
    claim = build_claim(inputs, config, payer, urls, stamp, claim_identifier, patient=patient,
                        insurer=insurer, requestor=requestor, coverage=coverage,
                        service_request=service_request, findings=findings)
    claim_item = claim["item"][0]
    claim_item.update(occurrence.serviced or {})
    if quantity:
        claim_item["quantity"] = quantity
    if team:
        claim["careTeam"] = team
        claim_item["careTeamSequence"] = [m["sequence"] for m in team]
    resources = _unique([patient, subscriber, insurer, requestor, coverage, service_request,
                         practitioner, *team_resources])
    bundle_identifier = str(uuid.uuid4())
    bundle = {
        "resourceType": "Bundle", "meta": profile("profile-pas-request-bundle"),
        "identifier": {"system": BUNDLE_ID_SYSTEM, "value": bundle_identifier},
        "type": "collection", "timestamp": stamp,
        "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": claim}]
        + [{"fullUrl": urls.of(r), "resource": r} for r in resources],
    }
    return BuiltRequest(bundle, bundle_identifier, claim_identifier, tuple(findings))


def with_coverage(information: Resource, urls: Urls, coverage: Resource | None) -> Resource:
    """The CRD coverage-information extension, its `coverage` pointing to our Coverage entry."""
    parts = [dict(p) for p in information.get("extension", [])]
    for part in parts:
        if part.get("url") == "coverage" and coverage is not None:
            part["valueReference"] = urls.ref(coverage)
    return {**information, "extension": parts}


def _unique(resources: list[Resource | None]) -> list[Resource]:
    """Each resource instance once (spec-14), in order."""
    seen: set[str] = set()
    kept = []
    for resource in resources:
        if resource is None:
            continue
        key = f"{resource['resourceType']}/{resource['id']}"
        if key not in seen:
            seen.add(key)
            kept.append(resource)
    return kept


class Urls:
    def __init__(self, scope: str) -> None:
        self.scope = scope

    def of(self, resource: Resource) -> str:
        return urn_for(resource["resourceType"], str(resource["id"]), self.scope)

    def ref(self, resource: Resource) -> dict[str, str]:
        return {"reference": self.of(resource)}


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


def member_id(coverage: Resource | None) -> str:
    """The member id the payer looks the patient up by: the Coverage's MB identifier (a
    dependent's own id), else subscriberId."""
    for identifier in (coverage or {}).get("identifier", []):
        if any(c.get("code") == "MB" for c in (identifier.get("type") or {}).get("coding", [])) \
                and identifier.get("value"):
            return str(identifier["value"])
    return str((coverage or {}).get("subscriberId") or "")


def to_subscriber(inputs: ClaimInputs, member: tuple[str, str],
                  findings: list[Finding]) -> Resource | None:
    """The subscriber as a PASSubscriber when the patient is a dependent (relationship other
    than self); the invariant self-beneficiary requires it."""
    coverage = inputs.coverage
    if coverage is None or relationship(coverage) == "self":
        return None
    reference = (coverage.get("subscriber") or {}).get("reference", "")
    held = inputs.get(reference) if reference else None
    if held is None:
        findings.append(Finding(
            "error", "Coverage.subscriber", "input",
            f"the patient is the subscriber's {relationship(coverage)} (a dependent), and the "
            f"subscriber ({reference or 'none named on the Coverage'}) is not among the EHR "
            "resources we hold; the payer needs the subscriber (PAS self-beneficiary)"))
        return None
    return to_person(held, "profile-subscriber", member, findings, "Coverage.subscriber")


def to_coverage(coverage: Resource | None, urls: Urls, patient: Resource,
                subscriber: Resource | None, insurer: Resource, member: str,
                findings: list[Finding]) -> Resource | None:
    if coverage is None:
        return None
    if not member:
        findings.append(Finding("error", "Coverage.identifier:memberid", "input",
                                "the Coverage has no member id (subscriberId or an MB "
                                "identifier); the payer looks the member up by it"))
    relation = relationship(coverage)
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
    if subscriber is not None:
        built["subscriber"] = urls.ref(subscriber)
    subscriber_id = coverage.get("subscriberId") or member
    if subscriber_id:
        built["subscriberId"] = subscriber_id
    for key in ("period", "dependent"):
        if coverage.get(key):
            built[key] = coverage[key]
    classes = [c for c in coverage.get("class", []) if c.get("type") and c.get("value")]
    if classes:
        built["class"] = classes
    return built


def to_requester(practitioner: Resource | None, findings: list[Finding]) -> Resource | None:
    if practitioner is None:
        return None
    built = to_practitioner(practitioner)
    if built is None:
        findings.append(Finding("warning", "ServiceRequest.requester", "input",
                                f"the requester Practitioner/{practitioner.get('id')} has no "
                                "identifier or no family name (PASPractitioner needs both): "
                                "sent by name only"))
    return built


def build_care_team(inputs: ClaimInputs, urls: Urls, findings: list[Finding]
                    ) -> tuple[list[Resource], list[Resource]]:
    """The order's performers as Claim.careTeam members, with the resources they point to."""
    members: list[Resource] = []
    resources: list[Resource] = []
    for performer in inputs.service_request.get("performer", []):
        reference = performer.get("reference", "")
        held = inputs.get(reference) if reference else None
        if held is None or held.get("resourceType") not in PERFORMER_TYPES:
            continue  # gather_inputs said why
        built = _performer(inputs, held, urls, findings)
        if built is not None:
            provider, role, used = built
            resources += used
            members.append(care_team_member(len(members) + 1, provider, role))
    return members, resources


def _performer(inputs: ClaimInputs, held: Resource, urls: Urls, findings: list[Finding]
               ) -> tuple[dict[str, str], Resource | None, list[Resource]] | None:
    where = f"{held['resourceType']}/{held.get('id')}"
    if held["resourceType"] == "Organization":
        organization = to_organization(held)
        if organization is None:
            findings.append(Finding("warning", "ServiceRequest.performer", "input",
                                    f"the performer {where} has no name: left out of careTeam"))
            return None
        return urls.ref(organization), None, [organization]
    role = held if held["resourceType"] == "PractitionerRole" else None
    source = inputs.get((role.get("practitioner") or {}).get("reference", "")) if role else held
    practitioner = to_practitioner(source) if source else None
    if practitioner is None:
        findings.append(Finding("warning", "ServiceRequest.performer", "input",
                                f"the performer {where}: its practitioner is not held or has no "
                                "identifier or family name (PASPractitioner needs them): left "
                                "out of careTeam"))
        return None
    organization_source = inputs.get((role.get("organization") or {}).get("reference", "")) \
        if role else None
    organization = to_organization(organization_source) if organization_source else None
    telecom = contact_points(role) or contact_points(source) or contact_points(
        organization_source)
    if not telecom:
        if organization is not None:  # no way to reach the person: name the organisation
            return urls.ref(organization), role, [organization]
        findings.append(Finding("warning", "ServiceRequest.performer", "input",
                                f"the performer {where} has no phone, email or endpoint (US "
                                "Core requires one on a PractitionerRole): left out of careTeam"))
        return None
    built_role = to_role(role or {"id": f"performer-{practitioner['id']}"},
                         urls.ref(practitioner), urls.ref(organization) if organization else None,
                         telecom)
    used = [practitioner, built_role] + ([organization] if organization else [])
    return urls.ref(built_role), role, used


def to_service_request(request: Resource, urls: Urls, patient: Resource,
                       coverage: Resource | None, practitioner: Resource | None,
                       occurrence: Occurrence, quantity: Resource | None,
                       performers: list[dict[str, str]]) -> Resource:
    built: Resource = {
        "resourceType": "ServiceRequest", "id": request["id"],
        "meta": profile("profile-servicerequest"), "status": request.get("status", "active"),
        "intent": "order", "subject": urls.ref(patient),
    }
    for key in ("category", "priority", "code", "reasonCode", "authoredOn"):
        if key in request:
            built[key] = request[key]
    if quantity:
        built["quantityQuantity"] = quantity
    if occurrence.timing:
        built["occurrenceTiming"] = occurrence.timing
    requester = request.get("requester") or {}
    if practitioner is not None:
        built["requester"] = urls.ref(practitioner)
    elif requester.get("display"):
        built["requester"] = {"display": requester["display"]}
    if performers:
        built["performer"] = performers
    if coverage is not None:
        built["insurance"] = [urls.ref(coverage)]
    return built


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


def with_billing_code(request: Resource, config: PasConfig) -> dict[str, Any]:
    """PASServiceRequest binds `code` to the X12 278 requested service types (required): the
    order's own codings are kept and the item's billing code is added when it is not one."""
    code = dict(request.get("code") or {})
    codings = list(code.get("coding", []))
    billing = product_or_service(request, config)["coding"][0]
    if billing not in codings:
        codings.append(billing)
    code["coding"] = codings
    return code


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


def relationship(coverage: Resource) -> str:
    for c in (coverage.get("relationship") or {}).get("coding", []):
        if c.get("code") in RELATIONSHIP_X12:
            return str(c["code"])
    subscriber = (coverage.get("subscriber") or {}).get("reference", "")
    beneficiary = (coverage.get("beneficiary") or {}).get("reference", "")
    return "self" if not subscriber or subscriber == beneficiary else "other"


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-") or "payer"
