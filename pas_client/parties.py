"""The people and organisations of a PAS request, as the PAS profiles want them: the patient
(PASBeneficiary), the subscriber of the Coverage (PASSubscriber) when the patient is a
dependent, and the requested performer as `Claim.careTeam` (a PASPractitionerRole, with its
PASPractitioner and PASOrganization, or a PASOrganization; role X12 98 `SJ` Service Provider,
qualification the NUCC taxonomy of the role's specialty when it has one).

Data a profile requires and the EHR does not have is a finding, never invented: a Practitioner
without identifier or family name is left out of the care team with a warning. A family name
is read from `name.text` when only the text is there ("Dr. Maya Reed" -> Reed)."""

from __future__ import annotations

from typing import Any

from pas_client.conformance.finding import Finding

Resource = dict[str, Any]
PAS = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"
X12 = "https://codesystem.x12.org/005010/"
NUCC = "http://nucc.org/provider-taxonomy"
SERVICE_PROVIDER = {"coding": [{"system": X12 + "98", "code": "SJ",
                                "display": "Service Provider"}]}
GENDERS = frozenset({"male", "female", "other", "unknown"})
PREFIXES = frozenset({"dr", "dr.", "mr", "mr.", "mrs", "mrs.", "ms", "ms.", "prof", "prof."})
SUFFIXES = frozenset({"md", "m.d.", "do", "d.o.", "phd", "np", "pa", "rn", "jr", "jr.", "sr",
                      "sr.", "ii", "iii"})


def profile(name: str) -> dict[str, Any]:
    return {"profile": [PAS + name]}


def contact_points(resource: Resource | None) -> list[Resource]:
    """telecom entries with the system and value US Core requires."""
    return [{k: t[k] for k in ("system", "value", "use", "rank") if k in t}
            for t in (resource or {}).get("telecom", []) if t.get("system") and t.get("value")]


def usable_identifiers(resource: Resource) -> list[Resource]:
    return [{k: i[k] for k in ("use", "type", "system", "value") if k in i}
            for i in resource.get("identifier", []) if i.get("system") and i.get("value")]


def to_person(resource: Resource, profile_name: str, member: tuple[str, str] | None,
              findings: list[Finding], where: str) -> Resource:
    """A Patient (beneficiary or subscriber) from a Patient or a RelatedPerson."""
    identifiers = usable_identifiers(resource)
    if not identifiers and member and member[1]:
        identifiers = [{"system": member[0], "value": member[1]}]
    gender = resource.get("gender") if resource.get("gender") in GENDERS else "unknown"
    kept: Resource = {"identifier": identifiers, "name": names(resource), "gender": gender}
    birth = str(resource.get("birthDate", ""))
    if len(birth) == 10:
        kept["birthDate"] = birth
    if resource.get("address"):
        kept["address"] = resource["address"]
    if contact_points(resource):
        kept["telecom"] = contact_points(resource)
    if not kept["name"]:
        findings.append(Finding("error", f"{where}.name", "input",
                                f"{resource['resourceType']}/{resource.get('id')} has no name; "
                                "the payer needs the member's name"))
    rid = resource["id"] if resource["resourceType"] == "Patient" else f"rp-{resource['id']}"
    return {"resourceType": "Patient", "id": rid, "meta": profile(profile_name), **kept}


def names(resource: Resource) -> list[Resource]:
    """The resource's names, each with a family name (read from the text when missing)."""
    found = []
    for name in resource.get("name") or []:
        if not isinstance(name, dict):
            continue
        family = name.get("family") or family_from_text(str(name.get("text", "")))
        if not family:
            continue
        kept = {k: name[k] for k in ("use", "text", "given", "prefix", "suffix") if k in name}
        found.append({**kept, "family": family})
    return found


def family_from_text(text: str) -> str:
    words = [w for w in text.replace(",", " ").split() if w.lower() not in SUFFIXES]
    words = [w for w in words if w.lower() not in PREFIXES]
    return words[-1] if words else ""


def to_practitioner(practitioner: Resource) -> Resource | None:
    """A PASPractitioner, or None when it lacks what the profile requires (identifier,
    family name)."""
    identifiers = usable_identifiers(practitioner)
    named = names(practitioner)
    if not identifiers or not named:
        return None
    built: Resource = {"resourceType": "Practitioner", "id": practitioner["id"],
                       "meta": profile("profile-practitioner"), "identifier": identifiers,
                       "name": named}
    if contact_points(practitioner):
        built["telecom"] = contact_points(practitioner)
    return built


def to_organization(organization: Resource) -> Resource | None:
    if not organization.get("name"):
        return None
    built: Resource = {"resourceType": "Organization", "id": organization["id"],
                       "meta": profile("profile-organization"),
                       "identifier": usable_identifiers(organization), "active": True,
                       "name": organization["name"]}
    if not built["identifier"]:
        del built["identifier"]
    if contact_points(organization):
        built["telecom"] = contact_points(organization)
    if organization.get("address"):
        built["address"] = organization["address"]
    return built


def to_role(role: Resource, practitioner_ref: dict[str, str],
            organization_ref: dict[str, str] | None, telecom: list[Resource]) -> Resource:
    """A PASPractitionerRole; `telecom` is how to reach it (US Core requires contact points or
    an endpoint): the role's own, else its practitioner's or organization's."""
    built: Resource = {"resourceType": "PractitionerRole", "id": role["id"],
                       "meta": profile("profile-practitionerrole"),
                       "practitioner": practitioner_ref}
    if organization_ref:
        built["organization"] = organization_ref
    for key in ("code", "specialty"):
        if role.get(key):
            built[key] = role[key]
    if telecom:
        built["telecom"] = telecom
    return built


def qualification(role: Resource | None) -> Resource | None:
    """The NUCC taxonomy of the role's specialty, as careTeam.qualification (X12 127, PRV03)."""
    for concept in (role or {}).get("specialty", []):
        for coding in concept.get("coding", []):
            if coding.get("system") == NUCC and coding.get("code"):
                return {"coding": [{"system": X12 + "127", "code": coding["code"],
                                    **({"display": coding["display"]}
                                       if coding.get("display") else {})}]}
    return None


def care_team_member(sequence: int, provider_ref: dict[str, str],
                     role: Resource | None) -> Resource:
    member: Resource = {
        "extension": [{"url": PAS + "extension-careTeamClaimScope", "valueBoolean": True}],
        "sequence": sequence, "provider": provider_ref, "role": SERVICE_PROVIDER}
    found = qualification(role)
    if found:
        member["qualification"] = found
    return member
