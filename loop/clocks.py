"""Program clocks (`[[loop.programs]]`): which referrals get one, when it starts, what meets it.

- TEAM (goal `visit`): a referral to one of the program's specialties (primary care) that is
  post-discharge: its ServiceRequest's `encounter` is an inpatient stay of one of
  `encounter_classes`, or its code or category is one of `codes`. The clock starts at the
  discharge (the Encounter's `period.end`; else the order's `authoredOn`) and is met by
  `complete-visit`.
- ASM (goal `report`): a referral to one of the program's specialties (whose reason is one of
  `reason_codes`, prefix match, when set). The clock starts at the visit and is met by
  `record-receipt`: the specialist's report reached the primary-care clinician.

Starting, meeting and missing a clock are lifecycle events (start-clock, meet-clock, miss-clock)
recorded by work items; the miss is a work item due at the clock's due time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from loop.client import FhirClient
from loop.config import LoopConfig, Program
from loop.context import LOOP, Core
from loop.fhir import source_base
from referrals import closed_loop as loop
from referrals.errors import IllegalTransition, RetryLater
from referrals.model import Command, Referral, source_server
from referrals.store.schema import work_items
from referrals.store.work import WorkItem

log = logging.getLogger("refloop.loop.clocks")

CLOCK_KIND = "loop.clock"
START, MEET, DUE = "start", "meet", "due"

ClientFor = Callable[[str], FhirClient]


class Clocks:
    def __init__(self, core: Core, config: LoopConfig, client_for: ClientFor) -> None:
        self.core = core
        self.config = config
        self.client_for = client_for

    def program(self, name: str, specialty: str) -> Program | None:
        wanted = specialty.strip().lower()
        return next((p for p in self.config.programs
                     if p.program == name and wanted in p.specialties), None)

    # -- deciding (inside the referral's transaction) ---------------------------------------

    def on_detect(self, conn: Connection, referral: Referral) -> None:
        if self.program(loop.TEAM, referral.specialty) is not None:
            self._ask(conn, referral.id, START, loop.TEAM, referral.created_at)

    def on_visit(self, conn: Connection, referral: Referral, at: datetime) -> None:
        team = referral.clock(loop.TEAM)
        if team is not None and team.met_at is None:
            self._ask(conn, referral.id, MEET, loop.TEAM, at)
        if referral.clock(loop.ASM) is None and \
                self.program(loop.ASM, referral.specialty) is not None:
            self._ask(conn, referral.id, START, loop.ASM, at)

    def on_receipt(self, conn: Connection, referral: Referral, at: datetime) -> None:
        if self.program(loop.ASM, referral.specialty) is not None:
            self._ask(conn, referral.id, MEET, loop.ASM, at)

    def _ask(self, conn: Connection, referral_id: str, op: str, program: str,
             at: datetime, run_at: datetime | None = None) -> None:
        self.core.work.enqueue(CLOCK_KIND, {"referral_id": referral_id, "op": op,
                                            "program": program, "at": at.isoformat()},
                               key=f"{CLOCK_KIND}:{referral_id}:{program}:{op}",
                               run_at=run_at, conn=conn)

    # -- recording (the work handler) -------------------------------------------------------

    def handle(self, item: WorkItem) -> None:
        payload = item.payload
        referral = self.core.store.get(str(payload["referral_id"]))
        program, op = str(payload["program"]), str(payload["op"])
        at = datetime.fromisoformat(str(payload["at"]))
        clock = referral.clock(program)
        if op == START:
            if clock is None:
                self._start(referral, program, at)
        elif op == MEET:
            if clock is None:
                if self._starting(referral.id, program):  # its start is on its way
                    raise RetryLater(f"the {program} clock is not started yet",
                                     delay_seconds=30)
                return
            if clock.met_at is None:
                self._act(referral, loop.MEET_CLOCK, {"program": program, "at": at})
        elif op == DUE and clock is not None and clock.open and clock.due_at <= \
                self.core.now():
            self._act(referral, loop.MISS_CLOCK, {"program": program, "at": clock.due_at})

    def _starting(self, referral_id: str, program: str) -> bool:
        with self.core.db.read() as conn:
            status = conn.execute(sa.select(work_items.c.status).where(
                work_items.c.idempotency_key == f"{CLOCK_KIND}:{referral_id}:{program}:{START}"
            )).scalar()
        return status == "pending"

    def _start(self, referral: Referral, program: str, at: datetime) -> None:
        settings = self.program(program, referral.specialty)
        if settings is None:
            return
        service_request = self._service_request(referral)
        if program == loop.TEAM:
            started = self._discharge(referral, settings, service_request)
        else:
            started = at if _reason_matches(settings, service_request) else None
        if started is None:
            return
        due = started + timedelta(days=settings.days)
        if self._act(referral, loop.START_CLOCK, {"program": program, "goal": settings.goal,
                                                  "started_at": started, "due_at": due}):
            with self.core.db.write() as conn:
                self._ask(conn, referral.id, DUE, program, due, run_at=due)

    def _discharge(self, referral: Referral, settings: Program,
                   service_request: dict[str, Any]) -> datetime | None:
        """When the TEAM clock starts: the discharge of the stay the order names; None when the
        referral is not a post-discharge one by the program's rules."""
        encounter = self._encounter(referral, service_request)
        stay = _coded(encounter.get("class") or {}) if encounter else set()
        by_class = bool(settings.encounter_classes) and bool(
            stay & set(settings.encounter_classes))
        by_code = bool(settings.codes) and bool(_order_codes(service_request) &
                                                set(settings.codes))
        if (settings.encounter_classes or settings.codes) and not (by_class or by_code):
            return None
        ended = ((encounter or {}).get("period") or {}).get("end") or \
            service_request.get("authoredOn")
        return _parse(ended) or referral.created_at

    def _service_request(self, referral: Referral) -> dict[str, Any]:
        return self.core.resources.try_get(
            "ServiceRequest", referral.service_request.rsplit("/", 1)[-1],
            server=source_server(referral.source_key)) or {}

    def _encounter(self, referral: Referral, service_request: dict[str, Any]
                   ) -> dict[str, Any] | None:
        reference = str((service_request.get("encounter") or {}).get("reference") or "")
        if not reference.startswith("Encounter/"):
            return None
        held = self.core.resources.try_get("Encounter", reference.split("/", 1)[1],
                                           server=source_server(referral.source_key))
        if held is not None:
            return held
        base = source_base(referral)
        return self.client_for(base).try_read(reference) if base else None

    def _act(self, referral: Referral, action: str, clock: dict[str, Any]) -> bool:
        try:
            self.core.referrals.act(referral.id, Command(
                action, actor=LOOP, at=self.core.now(), source="loop",
                changes={"clock": clock}))
        except IllegalTransition as exc:
            log.info("clock not changed", extra={"referral_id": referral.id, "why": str(exc)})
            return False
        return True


def _coded(concept: dict[str, Any]) -> set[str]:
    """A Coding or CodeableConcept's codes, bare and as system|code."""
    codings = concept.get("coding") or [concept]
    found = set()
    for coding in codings:
        code = str(coding.get("code") or "")
        if code:
            found |= {code, f"{coding.get('system', '')}|{code}"}
    return found


def _order_codes(service_request: dict[str, Any]) -> set[str]:
    found = _coded(service_request.get("code") or {})
    for category in service_request.get("category") or []:
        found |= _coded(category)
    return found


def _reason_matches(settings: Program, service_request: dict[str, Any]) -> bool:
    if not settings.reason_codes:
        return True
    codes = {code for reason in service_request.get("reasonCode") or []
             for code in _coded(reason) if "|" not in code}
    return any(code.startswith(prefix) for code in codes for prefix in settings.reason_codes)


def _parse(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None
