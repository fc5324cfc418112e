"""What one mapped message does, inside a batch (lookups.py): merge it into the v2 state of
what it describes (merge.py), store its resources, index its keys, park or wake messages, move
the referral through the lifecycle. Nothing here writes to the database directly except an
A40 merge (it flushes the batch first); the batch writes everything at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from hl7_bridge import index, merge
from hl7_bridge.config import Hl7Config
from hl7_bridge.facts import MAIN_STATE, Facts, main_segments, order_group, patient_names
from hl7_bridge.ids import owned_id
from hl7_bridge.lookups import BatchLookups
from hl7_bridge.maps import Mapped, to_mapped
from hl7_bridge.message import Message, Segment
from referrals.lifecycle import allowed_actions
from referrals.model import (
    LINK_CONSULT_NOTE,
    PAYER_MAX,
    SPECIALTY_MAX,
    Actor,
    Command,
    Link,
    Reason,
    Referral,
    Stage,
    new_referral_id,
)

PROCESSED, PARKED, IGNORED, QUARANTINED = "processed", "parked", "ignored", "quarantined"

#: lifecycle stage each appointment status leads to, and the action that gets it there (the
#: patient arriving, or the visit starting, is the visit happening: the note is owed from then)
APPOINTMENT_ACTIONS = {"booked": "schedule", "pending": "schedule", "waitlist": "schedule",
                       "arrived": "complete-visit", "checked-in": "complete-visit",
                       "fulfilled": "complete-visit", "noshow": "no-show",
                       "cancelled": "cancel-appointment",
                       "entered-in-error": "cancel-appointment"}
REFERRAL_PRIORITY = {"stat": "stat", "asap": "asap", "urgent": "urgent", "routine": "routine"}
#: the v2 state (merge.py) that holds each kind's main resource


@dataclass
class Outcome:
    status: str
    note: str = ""
    woke: int = 0


class Applier(Protocol):
    """What a message's effects need from the applier running the batch (apply.py)."""

    services: Any
    config: Hl7Config
    outbound: Any


class Effects:
    """One message being applied in a batch."""

    def __init__(self, applier: Applier, lookups: BatchLookups, inbox_id: int, sender: str,
                 facts: Facts, message: Callable[[], Message]) -> None:
        self.services = applier.services
        self.config = applier.config
        self.outbound = applier.outbound
        self.lookups = lookups
        self.referrals = lookups.referrals
        self.conn = lookups.conn
        self.inbox_id = inbox_id
        self.sender = sender
        self.facts = facts
        self.message = message  # parsed on first use: only to merge with a stored state
        self.server = f"hl7:{sender}"
        self.woke = 0
        self.actor = actor_of(sender)

    def apply(self, mapped: Mapped) -> Outcome:
        if mapped.kind == "ignored":
            return Outcome(IGNORED, f"{mapped.event} carries nothing the bridge maps")
        mapped = self.merged(mapped)
        if mapped.patient is not None:
            self.put_patient(mapped.patient)
        for practitioner in mapped.practitioners:
            self.put(practitioner)
        if mapped.kind in ("patient", "merge", "referral", "order"):
            self.put_insurance(mapped)
        handler = {"patient": self.patient_only, "merge": self.merge, "referral": self.referral,
                   "order": self.order, "status": self.status, "appointment": self.appointment,
                   "document": self.document}[mapped.kind]
        outcome = handler(mapped)
        outcome.woke = self.woke
        return outcome

    # v2 update semantics ----------------------------------------------------------------------

    def merged(self, mapped: Mapped) -> Mapped:
        """The message's mapping over the v2 state of its patient and of its main resource
        (merge.py): mapped again when either has a state, and the states updated."""
        patient_entity = self.patient_entity(mapped)
        main_entity = self.main_entity(mapped)
        stored_patient = self.lookups.state(patient_entity) if patient_entity else None
        stored_main = self.lookups.state(main_entity) if main_entity else None
        if not stored_patient and not stored_main:  # new to both: the states it starts
            if patient_entity:
                self.lookups.set_state(patient_entity, self.facts.patient_lines)
            if main_entity:
                self.lookups.set_state(main_entity, self.facts.main_lines)
            return mapped
        msg, charset, main_names = self.message(), self.facts.charset, \
            MAIN_STATE.get(mapped.kind, ())
        patient = merge.merge(stored_patient, msg.all("PID"),
                              patient_names(self.facts.message_type), charset) \
            if patient_entity else []
        main = merge.merge(stored_main, self.main_segments(msg, mapped), main_names, charset) \
            if main_entity else []
        if patient_entity:
            self.lookups.set_state(patient_entity, patient)
        if main_entity:
            self.lookups.set_state(main_entity, main)
        if self.facts.message_type == "ADT":
            main, main_names = [line for line in patient if not line.startswith("PID|")], \
                ("IN1", "IN2")
        again = to_mapped(merge.merged_message(msg, patient, main, main_names),
                          self.sender, self.config.sender(self.sender))
        again.referral_keys = mapped.referral_keys  # the keys this message names
        _keep_ids(again, mapped)
        return again

    def patient_entity(self, mapped: Mapped) -> str:
        if mapped.patient is None:
            return ""
        found = self.lookups.try_get_patient(mapped.patient.get("identifier", []))
        return f"Patient/{found[0] if found else mapped.patient['id']}"

    def main_entity(self, mapped: Mapped) -> str:
        if mapped.kind in ("referral", "order") and mapped.service_request is not None:
            existing = self.find_referral(mapped.referral_keys)
            if existing is not None:
                return existing.service_request
            return f"ServiceRequest/{mapped.service_request['id']}"
        if mapped.kind == "appointment" and mapped.appointment is not None:
            return f"Appointment/{mapped.appointment['id']}"
        return ""

    def main_segments(self, msg: Message, mapped: Mapped) -> list[Segment]:
        group = mapped.order_group if any(mapped.order_group) else \
            order_group(msg, self.facts.order_group_at)
        return main_segments(msg, mapped.kind, group)

    # resources --------------------------------------------------------------------------------

    def put(self, resource: dict[str, Any]) -> None:
        """Store `resource` (written by the batch); it must not be changed afterwards."""
        self.lookups.put(resource, self.server)

    def put_patient(self, patient: dict[str, Any]) -> None:
        """Match by identifier (assigning authority -> system); the matched id wins."""
        identifiers = patient.get("identifier", [])
        found = self.lookups.try_get_patient(identifiers)
        if found is not None:
            patient["id"] = found[0]
            stored = self.lookups.try_get_resource(found[1], "Patient", found[0]) or {}
            for kept in ("link", "active"):  # merges survive later demographic updates
                if kept in stored and kept not in patient:
                    patient[kept] = stored[kept]
        self.put(patient)
        self.lookups.index_patient(patient["id"], self.server, identifiers)

    def put_insurance(self, mapped: Mapped) -> None:
        """Coverages, payers and insured persons, pointing at the patient as matched; each
        Coverage under its patient's id (`coverage_ids`)."""
        patient = f"Patient/{mapped.patient['id']}" if mapped.patient else ""
        owned = coverage_ids(mapped)
        for resource in mapped.insurance:
            for field in ("beneficiary", "subscriber", "patient"):
                ref = resource.get(field)
                if patient and isinstance(ref, dict) and \
                        ref.get("reference", "").startswith("Patient/"):
                    resource[field] = {**ref, "reference": patient}
            self.put(_renamed(resource, owned))

    def put_service_request(self, sr: dict[str, Any], mapped: Mapped) -> None:
        """The ServiceRequest, its insurance naming the Coverages as stored (`coverage_ids`),
        each once."""
        owned = coverage_ids(mapped)
        if owned:
            stored = dict.fromkeys(owned[str(c["id"])] for c in mapped.coverages)
            sr["insurance"] = [{"reference": f"Coverage/{i}"} for i in stored]
        self.put(sr)

    # the referral -----------------------------------------------------------------------------

    def command(self, action: str, **kw: Any) -> Command:
        return Command(action, actor=self.actor, source=f"hl7:{self.sender}",
                       source_message=self.facts.control_id, **kw)

    def act(self, referral: Referral, action: str, **kw: Any) -> Referral:
        return self.referrals.act(referral.id, self.command(action, **kw))

    def find_referral(self, keys: list[str]) -> Referral | None:
        """The referral known under any of `keys` (a message's business keys, keys.py)."""
        referral_id = next((known for key in keys
                            if (known := self.lookups.try_get_referral_id(key))), None)
        return self.referrals.try_get(referral_id) if referral_id else None

    def park(self, keys: list[str]) -> Outcome:
        """Wait for the referral under every spelling of its key; woken by any of them."""
        for key in keys:
            self.lookups.park(self.inbox_id, f"referral:{key}")
        return Outcome(PARKED, f"waiting for referral {keys[0]}")

    def wake(self, keys: list[str]) -> None:
        """Re-queue, in arrival order, the messages parked under any of `keys`."""
        for key in keys:
            self.woke += len(self.lookups.wake(f"referral:{key}", self.inbox_id))

    # message kinds ----------------------------------------------------------------------------

    def patient_only(self, mapped: Mapped) -> Outcome:
        return Outcome(PROCESSED, "patient updated")

    def merge(self, mapped: Mapped) -> Outcome:
        """A40: the PID patient survives; the MRG patient is linked (replaced-by), not copied.
        Written directly, so the batch is flushed first and read again afterwards."""
        assert mapped.patient is not None
        self.lookups.flush()
        conn, resources = self.conn, self.services.resources
        survivor = mapped.patient["id"]
        old = index.try_get_patient(conn, mapped.merged)
        if old is not None and old[0] != survivor:
            old_id, old_server = old
            body = resources.try_get("Patient", old_id, server=old_server, conn=conn) or {
                "resourceType": "Patient", "id": old_id, "identifier": mapped.merged}
            body = {**body, "active": False,
                    "link": [{"other": {"reference": f"Patient/{survivor}"},
                              "type": "replaced-by"}]}
            resources.put(body, server=old_server, conn=conn)
            links = [lk for lk in mapped.patient.get("link", [])
                     if lk["other"]["reference"] != f"Patient/{old_id}"]
            mapped.patient = {**mapped.patient, "link": [  # a new dict: the put one is kept
                *links, {"other": {"reference": f"Patient/{old_id}"}, "type": "replaces"}]}
            self.put(mapped.patient)
            self.lookups.flush()
            index.move_identifiers(conn, old_id, survivor, self.server)
            for referral_id in index.referral_ids_of_patient(conn, f"Patient/{old_id}"):
                referral = self.referrals.get(referral_id)
                if not referral.terminal:
                    self.act(referral, "amend", changes={"patient": f"Patient/{survivor}"})
            index.repoint_patient(conn, f"Patient/{old_id}", f"Patient/{survivor}")
        index.index_patient(conn, survivor, self.server, mapped.merged, take_over=True)
        self.lookups.forget_patients()
        return Outcome(PROCESSED, "patients merged")

    def referral(self, mapped: Mapped) -> Outcome:
        sr = mapped.service_request
        assert sr is not None and mapped.patient is not None
        sr["subject"] = {"reference": f"Patient/{mapped.patient['id']}"}
        existing = self.find_referral(mapped.referral_keys)
        if existing is None and self.facts.trigger_event != "I12":
            return self.park(mapped.referral_keys)
        if existing is not None:  # the referral's own ServiceRequest, however it was keyed
            sr["id"] = existing.service_request.removeprefix("ServiceRequest/")
        self.put_service_request(sr, mapped)
        if existing is None:
            return self.open(mapped, sr)
        if self.facts.trigger_event == "I14" or sr["status"] in ("revoked", "entered-in-error"):
            return self.cancel(existing, "cancelled by the referrer (REF^I14)")
        if not existing.terminal:
            self.act(existing, "amend", changes=self.changes(sr, mapped))
        return Outcome(PROCESSED, "referral amended")

    def open(self, mapped: Mapped, sr: dict[str, Any]) -> Outcome:
        assert mapped.patient is not None
        patient = f"Patient/{mapped.patient['id']}"
        draft = Referral(id=new_referral_id(), source_key=source_key(self.sender, mapped),
                         service_request=f"ServiceRequest/{sr['id']}",
                         patient=patient, **_changes(sr, mapped.payer))
        referral, created = self.referrals.open(draft, self.command("detect"))
        for key in mapped.referral_keys:
            self.lookups.add_referral_key(key, referral.id, self.sender, patient)
        self.wake(mapped.referral_keys)
        return Outcome(PROCESSED, "referral opened" if created else "referral exists")

    def changes(self, sr: dict[str, Any], mapped: Mapped) -> dict[str, Any]:
        """An amend's changes. The payer follows the merged IN1s: kept when the message sends
        no IN1, cleared when the IN1s it sends leave the referral without insurance."""
        changes = _changes(sr, mapped.payer)
        if not mapped.payer and self.facts.has_in1:
            changes["payer"] = ""
        return changes

    def cancel(self, referral: Referral, text: str) -> Outcome:
        if referral.terminal or referral.stage == Stage.CANCEL_REQUESTED:
            return Outcome(PROCESSED, f"referral already {referral.stage.value}")
        if referral.stage in (Stage.DETECTED, Stage.TRIAGE):
            self.act(referral, "cancel", reason=Reason("referrer-cancelled", text))
        else:
            self.act(referral, "request-cancel", reason=Reason("referrer-cancelled", text))
        return Outcome(PROCESSED, "referral cancelled")

    def order(self, mapped: Mapped) -> Outcome:
        sr = mapped.service_request
        assert sr is not None and mapped.patient is not None
        sr["subject"] = {"reference": f"Patient/{mapped.patient['id']}"}
        orc1, orc5 = mapped.codes["orc1"], mapped.codes["orc5"]
        existing = self.find_referral(mapped.referral_keys)
        if existing is None and orc1 != "NW":
            return self.park(mapped.referral_keys)
        if existing is not None:
            sr["id"] = existing.service_request.removeprefix("ServiceRequest/")
        self.put_service_request(sr, mapped)
        if existing is None:
            return self.open(mapped, sr)
        if orc1 in ("CA", "OC", "DC", "CR", "DR", "OD") or orc5 in ("CA", "DC"):
            return self.cancel(existing, f"order control {orc1 or orc5}")
        if orc5 == "CM" and "complete-visit" in allowed_actions(existing.stage):
            self.act(existing, "complete-visit")
        elif orc5 in ("IP", "SC", "A") and existing.stage in (Stage.DETECTED, Stage.TRIAGE):
            self.act(existing, "accept")
        elif not existing.terminal:
            self.act(existing, "amend", changes=self.changes(sr, mapped))
        return Outcome(PROCESSED, f"order {orc1}/{orc5}")

    def status(self, mapped: Mapped) -> Outcome:
        """REF^I15 (answered with RRI^I15) or an inbound RRI (the recipient's decision)."""
        referral = self.find_referral(mapped.referral_keys)
        if referral is None:
            return self.park(mapped.referral_keys)
        if self.facts.message_type == "REF":
            queued = self.outbound.queue_status_reply(self.conn, referral, self.sender,
                                                      self.facts.control_id)
            return Outcome(PROCESSED, "status reply queued" if queued else
                           "status query: no outbound configured for this sender")
        code = mapped.codes.get("rf1_status", "")
        if code == "A" and referral.stage in (Stage.DETECTED, Stage.TRIAGE):
            self.act(referral, "accept")
        elif code == "R" and "decline" in allowed_actions(referral.stage):
            self.act(referral, "decline", reason=Reason("rejected", "RRI RF1-1 R"))
        return Outcome(PROCESSED, f"RRI {code}")

    def appointment(self, mapped: Mapped) -> Outcome:
        appointment = mapped.appointment
        assert appointment is not None
        if mapped.patient is not None:
            _set_patient(appointment, f"Patient/{mapped.patient['id']}")
        referral = self.find_referral(mapped.referral_keys)
        if mapped.referral_keys and referral is None:
            return self.park(mapped.referral_keys)
        if referral is not None:
            appointment["basedOn"] = [{"reference": referral.service_request}]
        self.put(appointment)
        if referral is None or referral.terminal:
            return Outcome(PROCESSED, "appointment stored")
        link = Link("Appointment", f"Appointment/{appointment['id']}", appointment["status"])
        action = APPOINTMENT_ACTIONS.get(appointment["status"], "link")
        if action in ("schedule", "complete-visit") and \
                referral.stage in (Stage.DETECTED, Stage.TRIAGE):
            referral = self.act(referral, "accept")
        if action not in allowed_actions(referral.stage):
            action = "link"
        self.act(referral, action, changes={"add_outputs": [link]})
        return Outcome(PROCESSED, f"appointment {appointment['status']}: {action}")

    def document(self, mapped: Mapped) -> Outcome:
        document = mapped.document
        assert document is not None
        referral = self.find_referral(mapped.referral_keys)
        if mapped.referral_keys and referral is None:
            return self.park(mapped.referral_keys)
        if referral is not None:
            document["context"] = {"related": [{"reference": referral.service_request}]}
        self.put(document)
        if referral is None or referral.terminal:
            return Outcome(PROCESSED, "document stored")
        link = Link(LINK_CONSULT_NOTE, f"DocumentReference/{document['id']}", "consult note")
        closing = document["status"] == "current" and \
            "close-loop" in allowed_actions(referral.stage)
        self.act(referral, "close-loop" if closing else "link",
                 changes={"add_outputs": [link]})
        return Outcome(PROCESSED, "loop closed" if closing else "document linked")


def coverage_ids(mapped: Mapped, owner: str = "") -> dict[str, str]:
    """The ids Coverages and insured persons are stored under, by the ids their mapping
    derived from their keys: the patient (`owner`, else the mapping's) owns them
    (ids.owned_id), so a new patient's Coverage goes beside the patient in the indexes instead
    of at a random place, and a Coverage keyed by plan alone (no member id) is the patient's
    own. Every patient owns its Coverages, those from before time-ordered ids too (they get a
    name-based id of their own): a Coverage shared by a family on one member id took the
    beneficiary, relationship and subscriber of whichever member was sent last, and every other
    member's referral pointed at it. Such a patient's next message gives it a Coverage of its
    own; the shared one stays for the ServiceRequests that name it. Computed from the mapping's
    ids, never from stored ones, so a mapping applied again (a batch run again) gives the same
    ids."""
    owner = owner or (str(mapped.patient["id"]) if mapped.patient else "")
    if not owner:
        return {}
    ids: dict[str, str] = {}
    for coverage in mapped.coverages:
        ids[str(coverage["id"])] = owned_id(owner, str(coverage["id"]))
        insured = str(coverage.get("subscriber", {}).get("reference", ""))
        if insured.startswith("RelatedPerson/"):
            person = insured.removeprefix("RelatedPerson/")
            ids[person] = owned_id(owner, person)
    return ids


def _renamed(resource: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    """`resource` under its id as stored (`coverage_ids`), naming its insured person so."""
    rid = str(resource["id"])
    if resource["resourceType"] not in ("Coverage", "RelatedPerson") or rid not in ids:
        return resource
    renamed = {**resource, "id": ids[rid]}
    insured = renamed.get("subscriber")
    if isinstance(insured, dict) and str(insured.get("reference", "")).startswith(
            "RelatedPerson/"):
        person = str(insured["reference"]).removeprefix("RelatedPerson/")
        renamed["subscriber"] = {**insured, "reference": f"RelatedPerson/{ids.get(person, person)}"}
    return renamed


def _keep_ids(again: Mapped, first: Mapped) -> None:
    """A mapping over merged states keeps the first mapping's ids: a new patient's or
    ServiceRequest's id is not derived from its key (ids.py), and its state is kept under it."""
    for name in ("patient", "service_request"):
        kept, fresh = getattr(first, name), getattr(again, name)
        if kept is not None and fresh is not None:
            fresh["id"] = kept["id"]


@lru_cache(maxsize=1024)
def actor_of(sender: str) -> Actor:
    """Who the changes a sender's messages make are attributed to."""
    return Actor(f"Device/hl7-{_slug(sender)}", f"HL7 v2 {sender}", "system")


def source_key(sender: str, mapped: Mapped) -> str:
    return f"hl7|{sender}|{mapped.referral_key}"


def _set_patient(appointment: dict[str, Any], patient: str) -> None:
    for participant in appointment.get("participant", []):
        if participant.get("actor", {}).get("reference", "").startswith("Patient/"):
            participant["actor"] = {"reference": patient}


def _changes(sr: dict[str, Any], payer: str = "") -> dict[str, Any]:
    """Referral fields from the ServiceRequest (priority, requester, performer, reason) and
    the payer of its first Coverage (kept when the message names none)."""
    changes: dict[str, Any] = {
        "priority": REFERRAL_PRIORITY.get(sr.get("priority", ""), "routine"),
        "requester": sr.get("requester", {}).get("reference", ""),
        "performer": next((p["reference"] for p in sr.get("performer", [])), ""),
    }
    code = sr.get("code") or {}
    kind: dict[str, Any] = next(iter(sr.get("category", [])[1:]), {})
    specialty = (kind.get("coding") or [{}])[0].get("display") or ""
    reason = next((r.get("text") or (r.get("coding") or [{}])[0].get("display", "")
                   for r in sr.get("reasonCode", [])), "")
    changes["specialty"] = specialty[:SPECIALTY_MAX]
    changes["reason_text"] = (reason or (code.get("coding") or [{}])[0].get("display", ""))
    if payer:
        changes["payer"] = payer[:PAYER_MAX]
    return changes


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-").lower() or "sender"
