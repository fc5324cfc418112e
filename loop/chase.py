"""Chasing the consult note: when the visit happened and no note is linked, a ladder of steps per
specialist (`[[loop.specialists]] ladder`), each a work item due so many days after the visit:

- `fhir-task`: a Task on the specialist's FHIR endpoint asking for the note (read again every
  `poll_hours`: when the specialist completes it with a DocumentReference output, the note is in);
- `v2-status`: a REF^I15 status request to the specialist's v2 system (through the bridge);
- `email`: mail to the office with a secure link to upload the PDF (through outreach);
- `coordinator`: a coordinator task (the core's services.tasks), the last step.

Every step taken is a `chase-note` event. The note arriving by any path stops the ladder (the
referral listener, in the transaction that links the note): later steps find the chase stopped
and do nothing, the open chase task is cancelled, and our Task at the specialist is withdrawn.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from loop import fhir, letters, outbox
from loop.client import FhirClient
from loop.config import LoopConfig, Specialist, Step
from loop.context import LOOP, Core
from loop.links import UPLOAD, LinkStore
from loop.milestones import has_note
from loop.tables import chases
from referrals import closed_loop as loop
from referrals.errors import IllegalTransition
from referrals.model import Command, Event, Referral, Stage
from referrals.store.work import WorkItem

log = logging.getLogger("refloop.loop.chase")

STEP_KIND = "loop.chase"
POLL_KIND = "loop.poll-task"
OUTCOME_KIND = "loop.chase-outcome"
WITHDRAW_KIND = "loop.withdraw-task"
TASK_KIND = "chase-note"
OUTCOMES = ("note-attached", "chase-again", "no-note-coming")
CHASING, STOPPED, EXHAUSTED, ABANDONED = "chasing", "stopped", "exhausted", "abandoned"

ClientFor = Callable[[str], FhirClient]
ApplyDocument = Callable[[str, dict[str, Any], str], str]


@dataclass(frozen=True)
class Chase:
    referral_id: str
    round: int
    specialist: str
    status: str
    visit_at: datetime
    steps_done: int
    last_step: str
    task_server: str
    task_id: str
    stopped_by: str


class Chaser:
    def __init__(self, core: Core, config: LoopConfig, links: LinkStore,
                 client_for: ClientFor) -> None:
        self.core = core
        self.config = config
        self.links = links
        self.client_for = client_for
        #: set by the adapter: applies a DocumentReference read from a server
        self.apply_document: ApplyDocument = lambda _server, _doc, _via: "not wired"

    # -- deciding (inside the referral's transaction) ---------------------------------------

    def start(self, conn: Connection, referral: Referral, event: Event) -> None:
        """The visit happened and no note is linked: plan this round's steps."""
        specialist = self.config.specialist_for(referral.specialty, referral.performer)
        ladder = self.ladder(specialist)
        now = self.core.now()
        values = {"round": event.seq, "specialist": specialist.name if specialist else "",
                  "status": CHASING, "visit_at": event.at, "steps_done": 0, "last_step": "",
                  "stopped_by": "", "started_at": now, "updated_at": now}
        if conn.execute(chases.update().where(chases.c.referral_id == referral.id)
                        .values(**values)).rowcount == 0:
            conn.execute(chases.insert().values(referral_id=referral.id, **values))
        for index, step in enumerate(ladder):
            self.core.work.enqueue(STEP_KIND, {
                "referral_id": referral.id, "round": event.seq, "index": index,
                "step": step.step}, key=f"{STEP_KIND}:{referral.id}:{event.seq}:{index}",
                run_at=event.at + timedelta(days=step.after_days), conn=conn)

    def ladder(self, specialist: Specialist | None) -> tuple[Step, ...]:
        if specialist is not None and specialist.ladder:
            return specialist.ladder
        return (Step("coordinator", self.config.chase_days),)

    def stop(self, conn: Connection, referral: Referral, event: Event) -> None:
        """The note arrived (or the referral ended): stop chasing."""
        found = self.get(referral.id, conn)
        if found is None or found.status not in (CHASING, EXHAUSTED):
            return
        by = event.source or event.actor.reference
        conn.execute(chases.update().where(chases.c.referral_id == referral.id).values(
            status=STOPPED, stopped_by=by[:64], updated_at=self.core.now()))
        self.core.tasks.cancel_open(referral.id, LOOP, "the consult note arrived" if
                                    has_note(referral) else f"the referral is "
                                    f"{referral.stage.value}", kind=TASK_KIND, conn=conn)
        if found.task_id and by != "loop:task-output":
            self.core.work.enqueue(WITHDRAW_KIND, {"referral_id": referral.id},
                                   key=f"{WITHDRAW_KIND}:{referral.id}:{found.round}",
                                   conn=conn)

    # -- the steps (work handlers) ----------------------------------------------------------

    def handle_step(self, item: WorkItem) -> None:
        payload = item.payload
        referral = self.core.store.get(str(payload["referral_id"]))
        chase = self.get(referral.id)
        if chase is None or chase.round != int(payload["round"]) or chase.status != CHASING:
            return
        if referral.stage != Stage.VISIT_COMPLETED or has_note(referral):
            with self.core.db.write() as conn:
                conn.execute(chases.update().where(chases.c.referral_id == referral.id).values(
                    status=STOPPED, stopped_by="stage", updated_at=self.core.now()))
            return
        specialist = self.config.specialist(chase.specialist)
        step = str(payload["step"])
        if step == "fhir-task" and specialist is not None:
            self._fhir_task(referral, chase, specialist)
        elif step == "v2-status" and specialist is not None:
            self._v2_status(referral, chase, specialist, int(payload["index"]))
        elif step == "email" and specialist is not None:
            self._email(referral, chase, specialist, int(payload["index"]))
        else:
            self._coordinator(referral, chase, specialist)

    def _fhir_task(self, referral: Referral, chase: Chase, specialist: Specialist) -> None:
        base = specialist.fhir_base
        due = self.core.now() + timedelta(days=7)
        task = fhir.chase_task(referral, base, visit_at=chase.visit_at, due=due,
                               sender=self.config.sender_name)
        stored = self.client_for(base).create_once(
            task, f"{fhir.REFERRAL_SYSTEM}|{referral.id}")
        with self.core.db.write() as conn:
            conn.execute(chases.update().where(chases.c.referral_id == referral.id).values(
                task_server=base, task_id=str(stored["id"])[:128], updated_at=self.core.now()))
            self._record(conn, referral, chase, "fhir-task", specialist.name,
                         extra={"task": f"Task/{stored['id']}", "server": base})
            self._poll_later(conn, referral.id, chase.round, 1)

    def _v2_status(self, referral: Referral, chase: Chase, specialist: Specialist,
                   index: int) -> None:
        with self.core.db.write() as conn:
            outbox.ask_v2(self.core.work, conn,
                          key=f"loop.v2:{referral.id}:{chase.round}:status-request:{index}",
                          partner=specialist.v2_partner, message="REF^I15",
                          referral_id=referral.id, status="A",
                          text=f"Consult note requested for the visit of "
                               f"{chase.visit_at:%Y-%m-%d}",
                          context={"purpose": "chase", "round": chase.round,
                                   "specialist": specialist.name})

    def _email(self, referral: Referral, chase: Chase, specialist: Specialist,
               index: int) -> None:
        now = self.core.now()
        with self.core.db.write() as conn:
            token = self.links.issue(referral.id, UPLOAD, now, recipient=specialist.email,
                                     conn=conn)
            letter = letters.upload_request(
                referral, link=f"{self.core.base_url}/loop/u/{token}",
                expires=now + timedelta(days=self.config.link_days),
                visit_at=chase.visit_at, sender=self.config.sender_name)
            outbox.ask_mail(self.core.work, conn,
                            key=f"loop.mail:{referral.id}:{chase.round}:note-request:{index}",
                            to=specialist.email, subject=letter.subject, text=letter.text,
                            html=letter.html, purpose="note-request", referral_id=referral.id,
                            context={"purpose": "chase", "round": chase.round,
                                     "specialist": specialist.name})

    def _coordinator(self, referral: Referral, chase: Chase,
                     specialist: Specialist | None, n: int = 0) -> None:
        who = specialist.name if specialist else "the specialist"
        now = self.core.now()
        with self.core.db.write() as conn:
            self.core.tasks.open(
                referral.id, TASK_KIND, f"No consult note from {who} since the visit of "
                f"{chase.visit_at:%d %b %Y}: ask for it, or attach it when it comes",
                due_at=now + timedelta(days=2), outcomes=OUTCOMES, on_outcome=OUTCOME_KIND,
                key=f"loop.chase-task:{referral.id}:{chase.round}:{n}",
                data={"round": chase.round, "specialist": chase.specialist, "n": n},
                conn=conn)
            conn.execute(chases.update().where(chases.c.referral_id == referral.id)
                         .values(status=EXHAUSTED, updated_at=now))
            self._record(conn, referral, chase, "coordinator", chase.specialist,
                         extra={"n": n} if n else {})

    # -- what came back ---------------------------------------------------------------------

    def step_done(self, referral_id: str, step: str, context: dict[str, Any]) -> None:
        """A v2 request was ACKed, or an upload mail was sent: the step is taken."""
        chase = self.get(referral_id)
        if chase is None or chase.round != int(context.get("round", -1)) or \
                chase.status != CHASING:
            return
        referral = self.core.store.get(referral_id)
        with self.core.db.write() as conn:
            self._record(conn, referral, chase, step, str(context.get("specialist", "")))

    def handle_poll(self, item: WorkItem) -> None:
        """Read our Task on the specialist's endpoint: a DocumentReference in its output is the
        note. Read again later while the chase goes on."""
        referral_id, round_ = str(item.payload["referral_id"]), int(item.payload["round"])
        chase = self.get(referral_id)
        if chase is None or chase.round != round_ or chase.status not in (CHASING, EXHAUSTED) \
                or not chase.task_id:
            return
        client = self.client_for(chase.task_server)
        task = client.try_read(f"Task/{chase.task_id}")
        outputs = [str((o.get("valueReference") or {}).get("reference") or "")
                   for o in (task or {}).get("output") or []]
        notes = [ref for ref in outputs if "DocumentReference/" in ref]
        for reference in notes:
            document = client.read(reference)
            self.apply_document(chase.task_server, document, "loop:task-output")
        if notes or task is None or task.get("status") in ("rejected", "cancelled", "failed"):
            return
        with self.core.db.write() as conn:
            self._poll_later(conn, referral_id, round_, int(item.payload["n"]) + 1)

    def handle_outcome(self, item: WorkItem) -> None:
        """The coordinator's outcome of a chase task."""
        payload = item.payload
        referral = self.core.store.get(str(payload["referral_id"]))
        chase = self.get(referral.id)
        data = payload.get("data") or {}
        if chase is None or chase.round != int(data.get("round", -1)):
            return
        outcome = payload["outcome"]
        if outcome == "no-note-coming":
            with self.core.db.write() as conn:
                conn.execute(chases.update().where(chases.c.referral_id == referral.id).values(
                    status=ABANDONED, stopped_by=str(payload.get("actor") or "")[:64],
                    updated_at=self.core.now()))
        elif outcome == "chase-again" and not has_note(referral) and \
                referral.stage == Stage.VISIT_COMPLETED:
            self._coordinator(referral, chase, self.config.specialist(chase.specialist),
                              n=int(data.get("n", 0)) + 1)

    def handle_withdraw(self, item: WorkItem) -> None:
        """Withdraw our request at the specialist: the note came another way (the Task is
        cancelled with that reason; a Task the specialist already closed is left alone)."""
        chase = self.get(str(item.payload["referral_id"]))
        if chase is None or not chase.task_id:
            return
        client = self.client_for(chase.task_server)
        task = client.try_read(f"Task/{chase.task_id}")
        if task is None or task.get("status") in ("completed", "cancelled", "rejected",
                                                  "failed", "entered-in-error"):
            return
        task = {**task, "status": "cancelled",
                "statusReason": {"text": "The consult note was received by other means"}}
        task.pop("meta", None)
        client.send("PUT", f"Task/{chase.task_id}", body=task, ok=(200, 201))

    # -- the store --------------------------------------------------------------------------

    def get(self, referral_id: str, conn: Connection | None = None) -> Chase | None:
        query = sa.select(chases).where(chases.c.referral_id == referral_id)
        if conn is not None:
            row = conn.execute(query).mappings().first()
        else:
            with self.core.db.read() as c:
                row = c.execute(query).mappings().first()
        return _chase(row) if row else None

    def by_task(self, server: str, task_id: str) -> str | None:
        with self.core.db.read() as c:
            return c.execute(sa.select(chases.c.referral_id).where(
                chases.c.task_server == server.rstrip("/"),
                chases.c.task_id == task_id)).scalar()

    def _record(self, conn: Connection, referral: Referral, chase: Chase, step: str,
                specialist: str, extra: dict[str, Any] | None = None) -> None:
        conn.execute(chases.update().where(chases.c.referral_id == referral.id).values(
            steps_done=chases.c.steps_done + 1, last_step=step, updated_at=self.core.now()))
        try:
            self.core.referrals.act(referral.id, Command(
                loop.CHASE_NOTE, actor=LOOP, at=self.core.now(), source="loop",
                changes={"details": {"step": step, "destination": specialist,
                                     "attempt": chase.steps_done + 1, **(extra or {})}}),
                conn=conn)
        except IllegalTransition as exc:  # the note (or the end) came in meanwhile
            log.info("chase step not recorded", extra={"referral_id": referral.id,
                                                      "why": str(exc)})

    def _poll_later(self, conn: Connection, referral_id: str, round_: int, n: int) -> None:
        self.core.work.enqueue(POLL_KIND, {"referral_id": referral_id, "round": round_, "n": n},
                               key=f"{POLL_KIND}:{referral_id}:{round_}:{n}",
                               run_at=self.core.now() + timedelta(hours=self.config.poll_hours),
                               conn=conn)


def _chase(row: sa.RowMapping) -> Chase:
    return Chase(referral_id=row["referral_id"], round=int(row["round"]),
                 specialist=row["specialist"], status=row["status"], visit_at=row["visit_at"],
                 steps_done=int(row["steps_done"]), last_step=row["last_step"],
                 task_server=row["task_server"], task_id=row["task_id"],
                 stopped_by=row["stopped_by"])


__all__ = ["OUTCOMES", "Chase", "Chaser"]
