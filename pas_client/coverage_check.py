"""When a referral arrives: eligibility with the payer (CoverageEligibilityRequest, when
configured), the payer's CRD service (when configured), the coverage-requirements table; the
answer ("authorization required / not required / unknown" and its source) is stored, shown and
put on the referral (auth state). When the referral is accepted and authorization is required,
it waits for authorization (request-authorization: the lifecycle keeps outreach from starting
until `authorize`), and with `auto_submit` the PAS request is sent by itself.

Work kinds: "pas.coverage" {"referral_id"} (the referral was detected, or someone asked again),
"pas.gate" {"referral_id"} (the referral was accepted)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pas_client.bundle import (
    EXPEDITED,
    Urls,
    build_care_team,
    member_id,
    product_or_service,
    to_coverage,
    to_insurer,
    to_requestor,
)
from pas_client.config import PayerConfig
from pas_client.conformance.finding import Finding
from pas_client.crd import CrdAnswer, CrdError, build_hook_request, choose_service, read_answer
from pas_client.eligibility import build_request, find_responses, read_response, summary
from pas_client.inputs import ClaimInputs, gather_inputs, server_of
from pas_client.order import to_occurrence, to_quantity, visits
from pas_client.parties import to_person
from pas_client.requirements import (
    REQUIRED,
    UNKNOWN,
    OrderFacts,
    Requirement,
    decide,
    from_crd,
    from_eligibility,
    from_rules,
)
from referrals.errors import NotFound, PeerError
from referrals.model import Reason, Referral, Stage
from referrals.store.work import WorkItem

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from pas_client.flow import PriorAuthFlow
    from referrals.lifecycle import Transition

log = logging.getLogger("refloop.pas")
COVERAGE_KIND, GATE_KIND = "pas.coverage", "pas.gate"
#: the referral's auth state before any prior-authorization request: what the check found
REQUIREMENT_STATES = frozenset({"", "required", "not-required", "unknown"})


@dataclass
class CoverageCheck:
    flow: PriorAuthFlow

    # --- triggers ------------------------------------------------------------------------
    def on_transition(self, conn: Connection, change: Transition) -> None:
        """A referral listener (in the saving transaction): check when it arrives, gate when
        it is accepted. Nothing is queued when no payer is configured."""
        if not self.flow.config.payers:
            return
        referral, event = change.referral, change.event
        if event.action == "detect":
            self.flow.work.enqueue(COVERAGE_KIND, {"referral_id": referral.id},
                                   key=f"{COVERAGE_KIND}:{referral.id}", conn=conn)
        elif event.action == "accept":
            self.flow.work.enqueue(GATE_KIND, {"referral_id": referral.id},
                                   key=f"{GATE_KIND}:{referral.id}:{event.seq}", conn=conn)

    def handle_coverage(self, item: WorkItem) -> None:
        referral = self._referral(item)
        if referral is not None and not referral.terminal:
            self.check(referral)
            self.gate(referral.id)

    def handle_gate(self, item: WorkItem) -> None:
        referral = self._referral(item)
        if referral is not None:
            self.gate(referral.id)

    def _referral(self, item: WorkItem) -> Referral | None:
        try:
            found: Referral = self.flow.referral_store.get(str(item.payload["referral_id"]))
            return found
        except NotFound:
            log.info("pas coverage: referral gone", extra={"referral_id":
                                                           item.payload.get("referral_id")})
            return None

    # --- the check -----------------------------------------------------------------------
    def check(self, referral: Referral) -> Requirement:
        payer = self.flow.config.try_payer(referral.payer)
        if payer is None:
            known = ", ".join(p.name for p in self.flow.config.payers)
            return self._record(referral, referral.payer or "-", Requirement(
                UNKNOWN, f"no [[payers]] entry for the referral's payer "
                f"{referral.payer or '(none)'} (configured: {known})"), {}, None)
        server = server_of(referral.source_key)
        gathered = gather_inputs(referral.id, referral.priority, referral.service_request,
                                 referral.patient, lambda t, i: self.flow.resources.try_get(
                                     t, i, server=server), payer=(payer.name, payer.payer_id))
        if isinstance(gathered, list):
            return self._record(referral, payer.name, Requirement(
                UNKNOWN, "; ".join(f.message for f in gathered)), {}, None)
        eligibility = self.eligibility(referral, payer, gathered, server) \
            if payer.eligibility else None
        crd, crd_detail = self.crd(referral, payer, gathered) if payer.crd_url else (None, {})
        table = from_rules(payer, self.facts(referral, gathered, eligibility))
        requirement = decide(from_crd(payer, crd.coverage_information) if crd else None,
                             from_eligibility(payer, eligibility), table)
        detail = {"table": table.to_json(), "crd": crd_detail}
        return self._record(referral, payer.name, requirement, detail, eligibility)

    def facts(self, referral: Referral, inputs: ClaimInputs,
              eligibility: dict[str, Any] | None) -> OrderFacts:
        request = inputs.service_request
        codes = {str(c.get("code")) for c in (request.get("code") or {}).get("coding", [])
                 if c.get("code")}
        codes |= {str(c.get("code")) for c in product_or_service(request, self.flow.config)
                  .get("coding", [])}
        plans = {str(c.get(k)) for c in (inputs.coverage or {}).get("class", [])
                 for k in ("value", "name") if c.get(k)
                 if any(t.get("code") == "plan" for t in (c.get("type") or {}).get("coding", []))}
        if eligibility and eligibility.get("plan"):
            plans.add(str(eligibility["plan"]))
        return OrderFacts(frozenset(codes), referral.specialty,
                          self.flow.config.place_of_service, frozenset(plans))

    def _record(self, referral: Referral, payer: str, requirement: Requirement,
                detail: dict[str, Any], eligibility: dict[str, Any] | None) -> Requirement:
        detail = {**detail, "decided": requirement.to_json()}
        self.flow.store.save_coverage(referral.id, payer, requirement.status, requirement.source,
                                      detail, eligibility)
        current = self.flow.referral_store.get(referral.id)
        if current.auth_state in REQUIREMENT_STATES and \
                current.auth_state != requirement.status and not current.terminal:
            self.flow.act_on(current, "amend", reason=Reason(
                f"auth-{requirement.status}", requirement.source[:200]),
                changes={"auth_state": requirement.status})
        return requirement

    # --- eligibility -----------------------------------------------------------------------
    def eligibility(self, referral: Referral, payer: PayerConfig, inputs: ClaimInputs,
                    server: str) -> dict[str, Any]:
        """Ask the payer; what it answered (or why there is no answer), stored as is."""
        findings: list[Finding] = []
        urls = Urls(server)
        member = member_id(inputs.coverage)
        patient = to_person(inputs.patient, "profile-beneficiary",
                            ("urn:refloop:pas:member", member), findings, "Patient")
        insurer = to_insurer(payer, inputs.coverage, findings)
        requestor = to_requestor(self.flow.config.organization, findings)
        coverage = to_coverage(inputs.coverage, urls, patient, None, insurer, member, findings)
        if coverage is None:
            return {"error": "the ServiceRequest names no Coverage we hold"}
        team, team_resources = build_care_team(inputs, urls, findings)
        provider = next((r for r in team_resources for m in team[:1]
                         if urls.of(r) == m["provider"]["reference"]), None)
        quantity = to_quantity(inputs.service_request, findings)
        occurrence = to_occurrence(inputs.service_request, visits(quantity), findings,
                                   self.flow.now().date())
        request = build_request(
            patient=patient, coverage=coverage, insurer=insurer, requestor=requestor,
            provider=provider, product=product_or_service(inputs.service_request,
                                                          self.flow.config),
            category=self.flow.config.service_category, diagnoses=[
                c for c in inputs.service_request.get("reasonCode", [])
                if any(cd.get("system") == "http://hl7.org/fhir/sid/icd-10-cm"
                       for cd in c.get("coding", []))],
            serviced=occurrence.serviced, expedited=referral.priority in EXPEDITED,
            now=self.flow.now(), full_url=urls.of)
        entries = [request, patient, coverage, insurer, requestor, *team_resources]
        bundle = {"resourceType": "Bundle", "type": "collection",
                  "entry": [{"fullUrl": f"urn:uuid:{request['id']}" if n == 0
                             else urls.of(r), "resource": r} for n, r in enumerate(entries)]}
        try:
            reply = self.flow.client(payer).send_eligibility(json.dumps(bundle).encode())
            reply_id = self.flow.keep(None, payer, "eligibility", reply,
                                      referral_id=referral.id)
        except PeerError as exc:
            return {"error": f"the payer could not be reached: {exc}", "at": _now()}
        responses = find_responses(reply.parsed[0])
        if reply.rejected or not responses:
            problem = reply.outcome_text() if reply.rejected else \
                (reply.parsed[1] or "the reply holds no CoverageEligibilityResponse")
            self.flow.store.interpret_reply(reply_id, "rejected" if reply.rejected
                                            else "uninterpretable", problem)
            return {"error": problem, "reply_id": reply_id, "at": _now()}
        answer = {**read_response(responses[0], reply.parsed[0]), "reply_id": reply_id,
                  "at": _now()}
        self.flow.store.interpret_reply(reply_id, "eligibility", summary(answer))
        return answer

    # --- CRD -------------------------------------------------------------------------------
    def crd(self, referral: Referral, payer: PayerConfig, inputs: ClaimInputs
            ) -> tuple[CrdAnswer | None, dict[str, Any]]:
        """Discover the payer's CDS services, call the configured hook; (answer, detail)."""
        client = self.flow.client(payer)
        try:
            found = client.call("GET", payer.crd_url, None,
                                self._crd_headers(payer, payer.crd_url))
            reply_id = self.flow.keep(None, payer, "crd-discovery", found,
                                      referral_id=referral.id)
            service = choose_service(found.parsed[0], payer.crd_hook)
            self.flow.store.interpret_reply(reply_id, "discovery", service.id)
            url = f"{payer.crd_url}/{service.id}"
            held = {**inputs.related, f"Patient/{inputs.patient['id']}": inputs.patient,
                    **({f"Coverage/{inputs.coverage['id']}": inputs.coverage}
                       if inputs.coverage else {})}
            body = build_hook_request(service, user=_user(inputs), patient=inputs.patient,
                                      order=inputs.service_request, held=held,
                                      coverage=inputs.coverage)
            reply = client.call("POST", url, json.dumps(body).encode(),
                                self._crd_headers(payer, url))
            reply_id = self.flow.keep(None, payer, "crd", reply, referral_id=referral.id)
            if not 200 <= reply.status < 300:
                raise CrdError(f"HTTP {reply.status}: {reply.outcome_text()}")
            answer = read_answer(reply.parsed[0])
        except (PeerError, CrdError) as exc:
            return None, {"error": str(exc), "at": _now()}
        self.flow.store.interpret_reply(reply_id, "crd", f"{len(answer.cards)} cards, "
                                        f"{len(answer.coverage_information)} coverage "
                                        "information")
        return answer, {"service": service.id, "cards": answer.cards, "reply_id": reply_id,
                        "coverage_information": answer.coverage_information, "at": _now()}

    def _crd_headers(self, payer: PayerConfig, url: str) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        token = self.flow.client(payer).token
        if token is not None:
            headers["Authorization"] = f"Bearer {token.cds_hooks_jwt(url)}"
        return headers

    # --- the gate ---------------------------------------------------------------------------
    def gate(self, referral_id: str) -> None:
        """An accepted referral whose authorization is required waits for it."""
        referral = self.flow.referral_store.get(referral_id)
        found = self.flow.store.coverage(referral_id)
        if found is None or found["requirement"] != REQUIRED or \
                referral.stage not in (Stage.ACCEPTED, Stage.COVERAGE_CHECK):
            return
        self.flow.act_on(referral, "request-authorization", reason=Reason(
            "auth-required", str(found["source"])[:200]), changes={"auth_state": "required"})
        payer = self.flow.config.try_payer(referral.payer)
        if payer is not None and payer.auto_submit:
            self.flow.enqueue_submit(referral.id, payer.name)

    def authorization_gate(self, referral_id: str) -> dict[str, Any]:
        """For other adapters (the outreach ladder, through wiring): plain data saying whether
        the referral waits for authorization."""
        found = self.flow.store.coverage(referral_id) or {}
        try:
            referral = self.flow.referral_store.get(referral_id)
        except NotFound:
            return {"requirement": UNKNOWN, "source": "no such referral", "waiting": False,
                    "pending": False}
        requirement = str(found.get("requirement", UNKNOWN))
        checked = self.flow.config.try_payer(referral.payer) is not None
        return {"requirement": requirement, "source": str(found.get("source", "")),
                "auth_state": referral.auth_state,
                "waiting": referral.stage == Stage.AUTH_PENDING,
                "pending": checked and not found}


def _user(inputs: ClaimInputs) -> str:
    """CDS Hooks userId: the ordering Practitioner or PractitionerRole."""
    reference = str((inputs.service_request.get("requester") or {}).get("reference", ""))
    kind = reference.split("/")[-2] if reference.count("/") >= 1 else ""
    if kind in ("Practitioner", "PractitionerRole"):
        return "/".join(reference.split("/")[-2:])
    return "PractitionerRole/refloop"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
