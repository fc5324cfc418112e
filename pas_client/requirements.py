"""Does this referral need prior authorization? Three sources, each giving "required",
"not-required" or "unknown" with where it came from:

1. the payer's Da Vinci CRD service (the `coverage-information` extension it returns on the
   order: `pa-needed`);
2. the payer's eligibility answer (`CoverageEligibilityResponse...authorizationRequired`);
3. the payer's coverage-requirements table in our configuration (service codes, specialty,
   place of service, plan), then the payer's `default_authorization`.

The payer's own definite answer wins; then the table; an indeterminate answer from the payer is
kept as the reason when nothing else knows. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pas_client.config import CoverageRule, PayerConfig

REQUIRED, NOT_REQUIRED, UNKNOWN = "required", "not-required", "unknown"
#: CRD pa-needed -> requirement (CRD 2.2: coverage-information-codes; 2.0/2.1: temp)
PA_NEEDED = {"auth-needed": REQUIRED, "performpa": REQUIRED, "no-auth": NOT_REQUIRED,
             "satisfied": NOT_REQUIRED, "conditional": UNKNOWN, "indeterminate": UNKNOWN}


@dataclass(frozen=True)
class OrderFacts:
    """What the table is matched against."""

    codes: frozenset[str]          # the order's codes and the billing code it maps to
    specialty: str = ""
    place_of_service: str = ""
    plans: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Requirement:
    status: str      # required | not-required | unknown
    source: str      # for people: which source said so, and how
    detail: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def definite(self) -> bool:
        return self.status != UNKNOWN

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "source": self.source, "detail": self.detail}


def from_rules(payer: PayerConfig, facts: OrderFacts) -> Requirement:
    for number, rule in enumerate(payer.coverage_rules, start=1):
        if matches(rule, facts):
            return Requirement(rule.authorization, f"coverage rule {number} of {payer.name} "
                               f"({describe(rule)})")
    return Requirement(payer.default_authorization,
                       f"no coverage rule of {payer.name} matches; its default")


def matches(rule: CoverageRule, facts: OrderFacts) -> bool:
    def fits(wanted: tuple[str, ...], have: set[str] | frozenset[str]) -> bool:
        return not wanted or bool({w.lower() for w in wanted} & {h.lower() for h in have})

    return (fits(rule.services, facts.codes) and fits(rule.specialties, {facts.specialty})
            and fits(rule.places_of_service, {facts.place_of_service})
            and fits(rule.plans, facts.plans))


def describe(rule: CoverageRule) -> str:
    parts = [f"{name} {', '.join(values)}" for name, values in (
        ("services", rule.services), ("specialties", rule.specialties),
        ("place of service", rule.places_of_service), ("plans", rule.plans)) if values]
    return "; ".join(parts) or "every order"


def from_crd(payer: PayerConfig, coverage_information: list[dict[str, Any]]
             ) -> Requirement | None:
    """From the coverage-information extensions the payer's CRD service returned."""
    if not coverage_information:
        return None
    statuses = []
    for info in coverage_information:
        values = sub_extensions(info)
        covered, needed = values.get("covered", ""), values.get("pa-needed", "")
        statuses.append(PA_NEEDED.get(needed, UNKNOWN) if covered != "not-covered"
                        else UNKNOWN)
    first = sub_extensions(coverage_information[0])
    status = REQUIRED if REQUIRED in statuses else \
        (NOT_REQUIRED if all(s == NOT_REQUIRED for s in statuses) else UNKNOWN)
    said = ", ".join(f"{k} {first[k]}" for k in ("covered", "pa-needed") if first.get(k))
    assertion = first.get("coverage-assertion-id", "")
    return Requirement(status, f"{payer.name} CRD ({payer.crd_hook}): {said}" +
                       (f", assertion {assertion}" if assertion else ""),
                       {"coverage_information": coverage_information})


def from_eligibility(payer: PayerConfig, answer: dict[str, Any] | None) -> Requirement | None:
    if not answer or answer.get("auth_required") is None:
        return None
    status = REQUIRED if answer["auth_required"] else NOT_REQUIRED
    return Requirement(status, f"{payer.name} eligibility answer: authorizationRequired "
                       f"{str(answer['auth_required']).lower()}")


def decide(crd: Requirement | None, eligibility: Requirement | None,
           table: Requirement) -> Requirement:
    for found in (crd, eligibility):
        if found is not None and found.definite:
            return found
    if table.definite:
        return table
    undecided = crd or eligibility
    if undecided is not None:
        return Requirement(UNKNOWN, f"{undecided.source}; {table.source}", undecided.detail)
    return table


def sub_extensions(extension: dict[str, Any]) -> dict[str, str]:
    """The simple sub-extensions of a complex extension, as text (url -> value)."""
    found: dict[str, str] = {}
    for part in extension.get("extension", []):
        for key, value in part.items():
            if key.startswith("value") and isinstance(value, str | bool | int):
                found.setdefault(str(part.get("url", "")), str(value))
    return found
