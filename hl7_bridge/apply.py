"""The `hl7.message` work handler: parse a stored message, map it, move the referral.

Runs after the ACK. One write transaction per message: resources, lifecycle, business keys,
parking and the inbox status commit together, so a re-run after a crash does nothing twice.
Bad content -> InboundError (the worker quarantines it). A message whose referral has not
arrived yet is parked (hl7_parked) and re-queued when the referral is created.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError

from hl7_bridge import index
from hl7_bridge.ack import AckError
from hl7_bridge.app_ack import queue_application_ack
from hl7_bridge.config import Hl7Config
from hl7_bridge.header import HeaderError, parse_header
from hl7_bridge.lookups import BatchLookups
from hl7_bridge.maps import Mapped, MappingError, to_mapped
from hl7_bridge.message import Message, MessageError, parse_messages
from referrals.errors import IllegalTransition, InboundError
from referrals.model import Actor, Command, Link, Reason, Referral, Stage, new_referral_id
from referrals.store.schema import inbox, work_items
from referrals.store.work import WorkItem
from referrals.worker import Worker, refused

log = logging.getLogger("refloop.hl7.apply")

PROCESSED, PARKED, IGNORED, QUARANTINED = "processed", "parked", "ignored", "quarantined"
WORK_KIND = "hl7.message"
#: messages applied in one write transaction (one commit, one fsync)
BATCH = 50
#: the longest referral key column (referrals.source_key, hl7_referral_keys, hl7_parked)
KEY_MAX = 512

#: lifecycle stage each appointment status leads to, and the action that gets it there
APPOINTMENT_ACTIONS = {"booked": "schedule", "pending": "schedule", "waitlist": "schedule",
                       "arrived": "schedule", "checked-in": "schedule",
                       "fulfilled": "complete-visit", "noshow": "no-show",
                       "cancelled": "cancel-appointment",
                       "entered-in-error": "cancel-appointment"}
REFERRAL_PRIORITY = {"stat": "stat", "asap": "asap", "urgent": "urgent", "routine": "routine"}


@dataclass
class Prepared:
    """A stored message parsed and mapped before its batch's bulk reads (or why it failed)."""

    sender: str
    message: Message | None = None
    mapped: Mapped | None = None
    error: Exception | None = None


@dataclass
class Outcome:
    status: str
    note: str = ""
    woke: int = 0


class Applier:
    """Applies stored v2 messages to the store and the referral lifecycle."""

    def __init__(self, services: Any, config: Hl7Config) -> None:
        self.services = services
        self.config = config
        #: work items this worker applied in a batch before the worker reached them
        self._applied: set[int] = set()

    def handle(self, item: WorkItem) -> None:
        """Apply `item` together with the other `hl7.message` items leased to the same worker
        (claiming more, up to BATCH) in ONE write transaction, in work-item order.

        Each message runs in a savepoint. At the first failure the messages before it are
        committed, and it and the ones after it are applied one by one (their own transaction,
        the worker's retry and quarantine rules), so one bad message blocks nothing and the
        order of messages is kept."""
        owner = item.lease_owner or ""
        if item.id in self._applied:
            self._applied.discard(item.id)
            return  # applied and completed by an earlier batch of this worker
        batch = self._batch(item, owner)
        applied, rest = self._apply_batch(batch, owner)
        self._applied.update(w.id for w in applied if w.id != item.id)
        if rest:
            one_by_one = Worker(self.services.work, {WORK_KIND: self.handle_one}, name=owner)
            for work in rest:
                outcome = one_by_one.process(work)
                # only an item that is finished is skipped when the worker reaches it; one that
                # failed goes back to the queue and is applied when it is claimed again
                if work.id != item.id and outcome in ("done", QUARANTINED):
                    self._applied.add(work.id)

    def _batch(self, item: WorkItem, owner: str) -> list[WorkItem]:
        work = self.services.work
        with self.services.db.read() as conn:
            rows = conn.execute(sa.select(work_items).where(
                work_items.c.kind == WORK_KIND, work_items.c.status == "pending",
                work_items.c.lease_owner == owner, work_items.c.id != item.id,
            ).order_by(work_items.c.id).limit(BATCH - 1)).mappings().all()
        leased = [_work_item(r) for r in rows if r["id"] not in self._applied]
        if len(leased) < BATCH - 1 and owner:
            leased += work.claim(owner, limit=BATCH - 1 - len(leased), kinds=[WORK_KIND])
        return sorted([item, *leased], key=lambda w: w.id)

    def _apply_batch(self, batch: list[WorkItem], owner: str
                     ) -> tuple[list[WorkItem], list[WorkItem]]:
        """(applied and completed, left to apply one by one)."""
        ids = [int(w.payload["inbox_id"]) for w in batch]
        done: list[WorkItem] = []
        marks: list[tuple[int, str, str]] = []
        with self.services.db.write() as conn:
            stored = {row["id"]: row for row in conn.execute(
                sa.select(inbox).where(inbox.c.id.in_(ids))).mappings()}
            prepared = {i: self._prepare(stored[i]) for i in ids
                        if stored[i]["status"] not in (PROCESSED, IGNORED, QUARANTINED)}
            lookups = BatchLookups(conn, self.services.resources)
            try:
                with conn.begin_nested():
                    _preload(lookups, prepared.values())
            except Exception as exc:  # a value of one message refused: each runs alone
                why = refused(exc) if isinstance(exc, DataError) else type(exc).__name__
                log.info("HL7 batch reads failed; applying the batch one by one",
                         extra={"batch": len(batch), "error": why})
                return [], batch
            try:
                for work, inbox_id in zip(batch, ids, strict=True):
                    try:
                        with conn.begin_nested():
                            if inbox_id in prepared:
                                marks.append(self._apply_prepared(
                                    conn, lookups, inbox_id, prepared[inbox_id]))
                    except Exception:  # retried alone, with the worker's rules
                        log.info("HL7 batch stopped; applying the rest one by one", extra={
                            "inbox_id": inbox_id, "batch": len(batch)})
                        return done, batch[len(done):]
                    done.append(work)
                return done, []
            finally:  # the applied messages' inbox rows and work items, in the same commit
                self.services.inbox.mark_many(marks, conn)
                self.services.work.complete_many(done, owner, conn)

    def handle_one(self, item: WorkItem) -> None:
        """Apply one message in its own transaction (the fallback of `handle`)."""
        inbox_id = int(item.payload["inbox_id"])
        stored = self.services.inbox.get(inbox_id)
        try:
            with self.services.db.write() as conn:
                self._apply_stored(conn, inbox_id, {"status": stored.status,
                                                    "body": stored.body,
                                                    "sender": stored.sender})
        except DataError as exc:  # the store refuses a value of this message: no retry helps
            problem = f"{refused(exc)} (of this message)"
            self._quarantine(inbox_id, stored.body, problem)
            raise InboundError(f"HL7 message {inbox_id}: {problem}") from exc
        except (MessageError, MappingError, IllegalTransition) as exc:
            self._quarantine(inbox_id, stored.body, str(exc))
            raise InboundError(f"HL7 message {inbox_id}: {exc}") from exc

    def _quarantine(self, inbox_id: int, body: bytes, problem: str) -> None:
        """Mark the inbox row quarantined and tell the sender (the worker keeps the item)."""
        with self.services.db.write() as conn:
            self.services.inbox.mark(inbox_id, QUARANTINED, problem[:4000], conn=conn)
            self.tell_sender(conn, body, problem)
        log.warning("HL7 message quarantined", extra={"inbox_id": inbox_id, "error": problem})

    def _apply_stored(self, conn: Connection, inbox_id: int, stored: Any) -> None:
        """Map and apply one stored message on `conn` and mark its inbox row."""
        if stored["status"] in (PROCESSED, IGNORED, QUARANTINED):
            return
        _, status, note = self._apply_prepared(
            conn, BatchLookups(conn, self.services.resources), inbox_id, self._prepare(stored))
        self.services.inbox.mark(inbox_id, status, note, conn=conn)

    def _prepare(self, stored: Any) -> Prepared:
        """Parse and map (no database); a failure is kept to be raised when the message's turn
        comes, so the messages before it are still applied."""
        sender = str(stored["sender"])
        prepared = Prepared(sender)
        try:
            prepared.message = self._parse(bytes(stored["body"]), sender)
            prepared.mapped = to_mapped(prepared.message, sender, self.config.sender(sender))
            _check_keys(prepared.mapped, sender)
        except Exception as exc:
            prepared.error = exc
        return prepared

    def _apply_prepared(self, conn: Connection, lookups: BatchLookups, inbox_id: int,
                        prepared: Prepared) -> tuple[int, str, str]:
        """Apply one prepared message; (inbox id, status, note) for its inbox row."""
        if prepared.error is not None:
            raise prepared.error
        message, mapped = prepared.message, prepared.mapped
        assert message is not None and mapped is not None
        outcome = self._apply(conn, lookups, inbox_id, prepared.sender, message, mapped)
        log.info("HL7 message applied", extra={
            "inbox_id": inbox_id, "event": mapped.event, "outcome": outcome.status,
            "control_id": message.control_id, "woke": outcome.woke})
        return inbox_id, outcome.status, outcome.note

    def tell_sender(self, conn: Connection, body: bytes, problem: str) -> None:
        """Enhanced mode: an application ACK AE when MSH-16 asks for one (see app_ack.py)."""
        try:
            header = parse_header(body)
        except HeaderError:
            return
        queue_application_ack(self.services.work, conn, self.config, header, "AE",
                              (AckError(207, f"the message could not be applied: {problem}"),))

    def _parse(self, body: bytes, sender: str) -> Message:
        config = self.config.sender(sender)
        return parse_messages(body, fallback_charset=config.fallback_charset,
                              default_version=config.default_version)[0]

    # --- dispatch ----------------------------------------------------------------------------

    def _apply(self, conn: Connection, lookups: BatchLookups, inbox_id: int, sender: str,
               msg: Message, mapped: Mapped) -> Outcome:
        ctx = _Context(self, conn, lookups, inbox_id, sender, msg)
        if mapped.kind == "ignored":
            return Outcome(IGNORED, f"{mapped.event} carries nothing the bridge maps")
        if mapped.patient is not None:
            ctx.put_patient(mapped.patient)
        for practitioner in mapped.practitioners:
            ctx.put(practitioner)
        if mapped.kind in ("patient", "merge", "referral", "order"):
            ctx.put_insurance(mapped)
        handler = {"patient": ctx.patient_only, "merge": ctx.merge, "referral": ctx.referral,
                   "order": ctx.order, "status": ctx.status, "appointment": ctx.appointment,
                   "document": ctx.document}[mapped.kind]
        outcome = handler(mapped)
        outcome.woke = ctx.woke
        return outcome


class _Context:
    """One message being applied inside one transaction."""

    def __init__(self, applier: Applier, conn: Connection, lookups: BatchLookups,
                 inbox_id: int, sender: str, msg: Message) -> None:
        self.services = applier.services
        self.config = applier.config
        self.conn = conn
        self.lookups = lookups
        self.inbox_id = inbox_id
        self.sender = sender
        self.msg = msg
        self.server = f"hl7:{sender}"
        self.woke = 0
        self.actor = Actor(f"Device/hl7-{_slug(sender)}", f"HL7 v2 {sender}", "system")

    # resources ---------------------------------------------------------------------------------

    def put(self, resource: dict[str, Any]) -> None:
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
        """Coverages, payers and insured persons, pointing at the patient as matched."""
        patient = f"Patient/{mapped.patient['id']}" if mapped.patient else ""
        for resource in mapped.insurance:
            for field in ("beneficiary", "subscriber", "patient"):
                ref = resource.get(field)
                if patient and isinstance(ref, dict) and \
                        ref.get("reference", "").startswith("Patient/"):
                    resource[field] = {**ref, "reference": patient}
            self.put(resource)

    def command(self, action: str, **kw: Any) -> Command:
        return Command(action, actor=self.actor, source=f"hl7:{self.sender}",
                       source_message=self.msg.control_id, **kw)

    def act(self, referral: Referral, action: str, **kw: Any) -> Referral:
        result: Referral = self.services.referrals.act(referral.id, self.command(action, **kw),
                                                       conn=self.conn)
        return result

    def find_referral(self, keys: list[str]) -> Referral | None:
        """The referral known under any of `keys` (a message's business keys, keys.py)."""
        referral_id = next((known for key in keys
                            if (known := self.lookups.try_get_referral_id(key))), None)
        if referral_id is None:
            return None
        found: Referral | None = self.services.store.try_get(referral_id, self.conn)
        return found

    def park(self, keys: list[str]) -> Outcome:
        """Wait for the referral under every spelling of its key; woken by any of them."""
        for key in keys:
            index.park(self.conn, self.inbox_id, f"referral:{key}")
            self.lookups.parked_now(f"referral:{key}")
        return Outcome(PARKED, f"waiting for referral {keys[0]}")

    def wake(self, keys: list[str]) -> None:
        """Re-queue, in arrival order, the messages parked under any of `keys`."""
        woken: dict[int, int] = {}
        for key in keys:
            if not self.lookups.may_be_parked(f"referral:{key}"):
                continue
            self.lookups.unparked(f"referral:{key}")
            for row_id, inbox_id in index.unpark(self.conn, f"referral:{key}"):
                woken.setdefault(inbox_id, row_id)
        index.unpark_messages(self.conn, list(woken))
        for inbox_id, row_id in sorted(woken.items()):
            self.services.work.enqueue(WORK_KIND, {"inbox_id": inbox_id},
                                       key=f"hl7-unpark:{inbox_id}:{row_id}", conn=self.conn)
            self.woke += 1

    # message kinds -----------------------------------------------------------------------------

    def patient_only(self, mapped: Mapped) -> Outcome:
        return Outcome(PROCESSED, "patient updated")

    def merge(self, mapped: Mapped) -> Outcome:
        """A40: the PID patient survives; the MRG patient is linked (replaced-by), not copied."""
        assert mapped.patient is not None
        survivor = mapped.patient["id"]
        old = index.try_get_patient(self.conn, mapped.merged)
        if old is not None and old[0] != survivor:
            old_id, old_server = old
            body = self.services.resources.try_get("Patient", old_id, server=old_server,
                                                   conn=self.conn) or {
                "resourceType": "Patient", "id": old_id, "identifier": mapped.merged}
            body = {**body, "active": False,
                    "link": [{"other": {"reference": f"Patient/{survivor}"},
                              "type": "replaced-by"}]}
            self.services.resources.put(body, server=old_server, conn=self.conn)
            links = [lk for lk in mapped.patient.get("link", [])
                     if lk["other"]["reference"] != f"Patient/{old_id}"]
            mapped.patient["link"] = [*links, {"other": {"reference": f"Patient/{old_id}"},
                                               "type": "replaces"}]
            self.put(mapped.patient)
            index.move_identifiers(self.conn, old_id, survivor, self.server)
            for referral_id in index.referral_ids_of_patient(self.conn, f"Patient/{old_id}"):
                referral = self.services.store.get(referral_id, self.conn)
                if not referral.terminal:
                    self.act(referral, "amend", changes={"patient": f"Patient/{survivor}"})
            index.repoint_patient(self.conn, f"Patient/{old_id}", f"Patient/{survivor}")
        index.index_patient(self.conn, survivor, self.server, mapped.merged, take_over=True)
        self.lookups.forget_patients()
        return Outcome(PROCESSED, "patients merged")

    def referral(self, mapped: Mapped) -> Outcome:
        sr = mapped.service_request
        assert sr is not None and mapped.patient is not None
        sr["subject"] = {"reference": f"Patient/{mapped.patient['id']}"}
        existing = self.find_referral(mapped.referral_keys)
        if existing is None and self.msg.trigger_event != "I12":
            return self.park(mapped.referral_keys)
        if existing is not None:  # the referral's own ServiceRequest, however it was keyed
            sr["id"] = existing.service_request.removeprefix("ServiceRequest/")
        self.put(sr)
        if existing is None:
            return self.open(mapped, sr)
        if self.msg.trigger_event == "I14" or sr["status"] in ("revoked", "entered-in-error"):
            return self.cancel(existing, "cancelled by the referrer (REF^I14)")
        if not existing.terminal:
            self.act(existing, "amend", changes=_changes(sr, mapped.payer))
        return Outcome(PROCESSED, "referral amended")

    def open(self, mapped: Mapped, sr: dict[str, Any]) -> Outcome:
        assert mapped.patient is not None
        patient = f"Patient/{mapped.patient['id']}"
        draft = Referral(id=new_referral_id(), source_key=f"hl7|{self.sender}|"
                         f"{mapped.referral_key}", service_request=f"ServiceRequest/{sr['id']}",
                         patient=patient, **_changes(sr, mapped.payer))
        referral, created = self.services.referrals.open(
            draft, self.command("detect"), conn=self.conn)
        for key in mapped.referral_keys:
            index.add_referral_key(self.conn, key, referral.id, self.sender, patient)
            self.lookups.added_referral_key(key, referral.id)
        self.wake(mapped.referral_keys)
        return Outcome(PROCESSED, "referral opened" if created else "referral exists")

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
        self.put(sr)
        if existing is None:
            return self.open(mapped, sr)
        if orc1 in ("CA", "OC", "DC", "CR", "DR", "OD") or orc5 in ("CA", "DC"):
            return self.cancel(existing, f"order control {orc1 or orc5}")
        if orc5 == "CM" and "complete-visit" in _allowed(existing):
            self.act(existing, "complete-visit")
        elif orc5 in ("IP", "SC", "A") and existing.stage in (Stage.DETECTED, Stage.TRIAGE):
            self.act(existing, "accept")
        elif not existing.terminal:
            self.act(existing, "amend", changes=_changes(sr, mapped.payer))
        return Outcome(PROCESSED, f"order {orc1}/{orc5}")

    def status(self, mapped: Mapped) -> Outcome:
        """REF^I15 (answered with RRI^I15) or an inbound RRI (the recipient's decision)."""
        referral = self.find_referral(mapped.referral_keys)
        if referral is None:
            return self.park(mapped.referral_keys)
        if self.msg.message_type == "REF":
            bridge = self.services.adapters.get("hl7")
            queued = bridge.queue_status_reply(self.conn, referral, self.sender,
                                               self.msg.control_id) if bridge else False
            return Outcome(PROCESSED, "status reply queued" if queued else
                           "status query: no outbound configured for this sender")
        code = mapped.codes.get("rf1_status", "")
        if code == "A" and referral.stage in (Stage.DETECTED, Stage.TRIAGE):
            self.act(referral, "accept")
        elif code == "R" and "decline" in _allowed(referral):
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
        if action not in _allowed(referral):
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
        link = Link("DocumentReference", f"DocumentReference/{document['id']}", "consult note")
        closing = document["status"] == "current" and "close-loop" in _allowed(referral)
        self.act(referral, "close-loop" if closing else "link",
                 changes={"add_outputs": [link]})
        return Outcome(PROCESSED, "loop closed" if closing else "document linked")


def _preload(lookups: BatchLookups, batch: Any) -> None:
    """The batch's bulk reads: identifiers, then the resources and keys they lead to."""
    ready = [p for p in batch if p.mapped is not None]
    lookups.load_patients({(str(i["system"]), str(i["value"])) for p in ready
                           for i in [*(p.mapped.patient or {}).get("identifier", []),
                                     *p.mapped.merged]})
    keys: set[tuple[str, str, str]] = set()
    for p in ready:
        server = f"hl7:{p.sender}"
        if p.mapped.patient is not None:
            found = lookups.try_get_patient(p.mapped.patient.get("identifier", []))
            keys.add((server, "Patient", found[0] if found else str(p.mapped.patient["id"])))
            if found:
                keys.add((found[1], "Patient", found[0]))
        keys |= {(server, str(r["resourceType"]), str(r["id"])) for r in p.mapped.resources
                 if r is not p.mapped.patient}
    lookups.load_resources(keys)
    referral_keys = {key for p in ready for key in p.mapped.referral_keys}
    lookups.load_referral_keys(referral_keys)
    lookups.load_parked({f"referral:{key}" for key in referral_keys})


def _check_keys(mapped: Mapped, sender: str) -> None:
    """Keys longer than their columns (referral source key, business keys, parked keys) would be
    refused by PostgreSQL and silently kept whole by SQLite: refuse them on both."""
    for key in mapped.referral_keys:
        if len(f"hl7|{sender}|{key}") > KEY_MAX or len(f"referral:{key}") > KEY_MAX:
            raise MappingError(f"the referral identifier {key[:40]!r}... with its namespace is "
                               f"too long to be stored (at most {KEY_MAX} characters with the "
                               "sender's name)")


def _work_item(row: Any) -> WorkItem:
    return WorkItem(id=int(row["id"]), kind=row["kind"], idempotency_key=row["idempotency_key"],
                    payload=row["payload"], attempts=int(row["attempts"]),
                    max_attempts=int(row["max_attempts"]), lease_owner=row["lease_owner"],
                    last_error=row["last_error"])


def _allowed(referral: Referral) -> list[str]:
    from referrals.lifecycle import allowed_actions

    return allowed_actions(referral.stage)


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
    changes["specialty"] = specialty[:128]
    changes["reason_text"] = (reason or (code.get("coding") or [{}])[0].get("display", ""))
    if payer:
        changes["payer"] = payer[:256]
    return changes


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-").lower() or "sender"

