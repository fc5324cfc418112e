"""The `hl7.message` work handler: parse stored messages, map them, move their referrals.

Runs after the ACK, on batches: the worker hands over the `hl7.message` items it claimed (and
the handler claims more, up to `[hl7] mapping_batch`). Every message is parsed and mapped
first, outside any transaction; then ONE write transaction reads what the batch needs in bulk,
applies the messages in work-item order in memory (effects.py) and writes everything together
(lookups.py, referrals/batch.py): resources, keys, parks, v2 states, referrals, events, inbox
marks and work completions commit at once, so a re-run after a crash does nothing twice.

A message that fails stops the batch there: the transaction is dropped, the messages before it
are mapped and applied again in a new one (nothing of the first run was written), and it and
the ones after it are applied one by one (a batch of one each), under the worker's retry and
quarantine rules. So one bad message blocks nothing and the order of messages is kept; when the
batch's bulk reads fail (a value of one message the database refuses) the whole batch runs one
by one. Bad content, and a value the database refuses (DataError), -> InboundError (the worker
quarantines it at once).
A message whose referral has not arrived yet is parked and re-queued when the referral is
created.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError

from hl7_bridge.ack import AckError
from hl7_bridge.ahead import Ahead
from hl7_bridge.app_ack import queue_application_ack
from hl7_bridge.config import Hl7Config
from hl7_bridge.effects import (
    IGNORED,
    PROCESSED,
    QUARANTINED,
    Effects,
    Outcome,
    coverage_ids,
    source_key,
)
from hl7_bridge.facts import Facts
from hl7_bridge.header import HeaderError, parse_header
from hl7_bridge.lookups import BatchLookups
from hl7_bridge.mapper import MappingProcess, map_message, parse_body
from hl7_bridge.maps import Mapped, MappingError
from hl7_bridge.message import Message, MessageError
from hl7_bridge.order import WAIT_SECONDS, first_waiting, held_back
from referrals.batch import ReferralBatch
from referrals.errors import IllegalTransition, InboundError, RetryLater
from referrals.store.schema import inbox
from referrals.store.work import WorkItem
from referrals.worker import Worker, refused

log = logging.getLogger("refloop.hl7.apply")

WORK_KIND = "hl7.message"
#: content errors: the message is quarantined (retrying would not help)
CONTENT_ERRORS = (MessageError, MappingError, IllegalTransition)
#: batches one `handle_many` call applies at most (each next one prepared while one is written)
MAPPING_ROUNDS = 20
#: why a held-back message's work item was postponed (order.py)
_WAIT_NOTE = "waits for an earlier message of its sender that is not applied yet"


@dataclass
class Prepared:
    """A stored message parsed and mapped before its batch's transaction (or why it failed)."""

    work: WorkItem
    inbox_id: int
    sender: str
    status: str
    body: bytes
    message: Message | None = None
    mapped: Mapped | None = None
    facts: Facts | None = None
    error: Exception | None = None

    def parsed(self, parse: Callable[[bytes, str], Message]) -> Message:
        """The parsed message (a mapping process parses it there: parsed here when needed)."""
        if self.message is None:
            self.message = parse(self.body, self.sender)
        return self.message

    @property
    def done(self) -> bool:
        """Applied (or set aside) already: a re-run changes nothing."""
        return self.status in (PROCESSED, IGNORED, QUARANTINED)


class _Stop(Exception):
    """Message `at` of a batch failed; the ones before it can be applied."""

    def __init__(self, at: int, cause: Exception) -> None:
        super().__init__(str(cause))
        self.at = at
        self.cause = cause


class Applier:
    """Applies stored v2 messages to the store and the referral lifecycle."""

    def __init__(self, services: Any, config: Hl7Config, outbound: Any) -> None:
        self.services = services
        self.config = config
        self.outbound = outbound
        #: where batches are parsed and mapped beside the writer (None: in the worker)
        self.mapper = MappingProcess(config) if config.mapping_process else None

    # the worker's entry points ------------------------------------------------------------------

    def __call__(self, item: WorkItem) -> None:
        """One message in its own transaction (the worker's one-by-one path)."""
        self.handle_one(item)

    def handle_many(self, items: list[WorkItem]) -> list[int]:
        """Apply `items` and more of the same worker's `hl7.message` items (up to
        `mapping_batch`) as one batch; the items after a failure go through the one-by-one path
        here, in order, and all of them when the batch fails as a whole (a lost race at flush),
        so none it claimed stays leased. While a full batch is written, the next one is claimed
        and parsed and mapped in a thread (SQLite and the disk run without the GIL), for up to
        `MAPPING_ROUNDS` batches. Every item is handled when it returns (the ids of `items`)."""
        owner = (items[0].lease_owner or "") if items else ""
        batch = self._claim(owner, items)
        ready: list[Prepared] | None = None  # None: apply_batch reads and parses the batch
        spent: list[Prepared] = []
        for round_ in range(1, MAPPING_ROUNDS + 1):
            more = round_ < MAPPING_ROUNDS and len(batch) >= self.config.mapping_batch
            following = self._claim(owner, []) if more else []
            ahead = Ahead(self._prepare, (following, spent)) if following else None
            spent = []  # the last batch's objects are freed in the thread, not here
            self._apply_or_one_by_one(batch, ready, owner)
            if ahead is None:
                break
            batch, ready, spent = following, _prepared_or_none(ahead), ready or []
        return [item.id for item in items]

    def _prepare(self, work: tuple[list[WorkItem], list[Prepared]]) -> list[Prepared]:
        """In the thread beside the writer: the next batch parsed and mapped, the spent batch
        handed over freed here, and the store's log checkpointed (Database.checkpoint)."""
        following, spent = work
        spent.clear()
        ready = self.parse_stored(following)
        self.services.db.checkpoint()  # the log written so far, copied beside the writer
        return ready

    def _claim(self, owner: str, items: list[WorkItem]) -> list[WorkItem]:
        """`items` and more of this worker's items, up to `mapping_batch`, in id order."""
        more = self.config.mapping_batch - len(items)
        claimed = self.services.work.claim(owner, limit=more, kinds=[WORK_KIND]) \
            if owner and more > 0 else []
        return sorted([*items, *claimed], key=lambda w: w.id)

    def _apply_or_one_by_one(self, batch: list[WorkItem], ready: list[Prepared] | None,
                             owner: str) -> None:
        try:
            applied = self.apply_batch(batch, owner, prepared=ready)
        except Exception as exc:
            log.warning("HL7 batch failed; applying its messages one by one", extra={
                "batch": len(batch), "error": type(exc).__name__})
            applied = []
        one_by_one = Worker(self.services.work, {WORK_KIND: self}, name=owner)
        for work in batch[len(applied):]:
            one_by_one.process(work)

    def handle_one(self, item: WorkItem) -> None:
        """Apply one message in its own transaction; bad content goes to quarantine."""
        (prepared,) = self.parse_stored([item])
        try:
            self.apply_batch([item], item.lease_owner or "", prepared=[prepared],
                             complete=False)
        except DataError as exc:  # the store refuses a value of this message: no retry helps
            problem = f"{refused(exc)} (of this message)"
            self._quarantine(prepared, problem)
            raise InboundError(f"HL7 message {prepared.inbox_id}: {problem}") from exc
        except CONTENT_ERRORS as exc:
            self._quarantine(prepared, str(exc))
            raise InboundError(f"HL7 message {prepared.inbox_id}: {exc}") from exc

    def _quarantine(self, prepared: Prepared, problem: str) -> None:
        """Mark the inbox row quarantined and tell the sender (the worker keeps the item)."""
        with self.services.db.write() as conn:
            self.services.inbox.mark(prepared.inbox_id, QUARANTINED, problem[:4000], conn=conn)
            self.tell_sender(conn, prepared.body, problem)
        log.warning("HL7 message quarantined", extra={"inbox_id": prepared.inbox_id,
                                                      "error": problem})

    # batches ----------------------------------------------------------------------------------

    def apply_batch(self, batch: list[WorkItem], owner: str, *,
                    prepared: list[Prepared] | None = None, complete: bool = True
                    ) -> list[WorkItem]:
        """Apply `batch` in one transaction; returns the leading items applied (and, with
        `complete`, completed). A single message's failure is raised; in a larger batch the
        ones before the failure are applied and the rest returned unapplied."""
        ready = prepared if prepared is not None else self.parse_stored(batch)
        try:
            self._run(ready, owner, complete)
            return batch
        except _Stop as stop:
            if len(batch) == 1:
                raise stop.cause from None
            log.info("HL7 batch stopped; applying the rest one by one", extra={
                "inbox_id": ready[stop.at].inbox_id, "batch": len(batch)})
            if stop.at:  # parsed and mapped again: the first run may have changed the dicts
                self._run(self.parse_stored(batch[:stop.at]), owner, complete)
            return batch[:stop.at]

    def _run(self, ready: list[Prepared], owner: str, complete: bool) -> None:
        with self.services.db.write() as conn:
            lookups = BatchLookups(conn, self.services.resources,
                                   ReferralBatch(self.services.referrals, conn),
                                   self.services.work)
            _refresh_status(conn, ready)
            try:
                self._preload(lookups, ready)
            except Exception as exc:  # e.g. a value of one message refused: each runs alone
                why = refused(exc) if isinstance(exc, DataError) else type(exc).__name__
                log.info("HL7 batch reads failed", extra={"batch": len(ready), "error": why})
                raise _Stop(0, exc) from exc
            first = first_waiting(conn, [(p.inbox_id, p.sender) for p in ready if not p.done])
            marks: list[tuple[int, str, str]] = []
            held: list[Prepared] = []
            for at, prepared in enumerate(ready):
                if prepared.done:
                    continue
                if held_back(first, prepared.inbox_id, prepared.sender):
                    if not complete:  # the one-by-one path: the worker postpones it
                        raise _Stop(at, RetryLater(_WAIT_NOTE, delay_seconds=WAIT_SECONDS))
                    held.append(prepared)
                    continue
                try:
                    marks.append(self._apply(lookups, prepared))
                except Exception as exc:
                    raise _Stop(at, exc) from exc
            lookups.flush()
            self.services.inbox.mark_many(marks, conn)
            if complete:
                self._complete(ready, held, owner, conn)

    def _complete(self, ready: list[Prepared], held: list[Prepared], owner: str,
                  conn: Connection) -> None:
        """Complete the batch's items, except those held back behind an earlier message of
        their sender (order.py): they are postponed, in the same transaction."""
        waiting = {id(p) for p in held}
        self.services.work.complete_many([p.work for p in ready if id(p) not in waiting],
                                         owner, conn)
        self.services.work.postpone_many([p.work for p in held], owner, WAIT_SECONDS,
                                         _WAIT_NOTE, conn)
        if held:
            log.info("HL7 messages wait for earlier ones of their sender", extra={
                "held": len(held), "first_inbox_id": held[0].inbox_id})

    def parse_stored(self, batch: list[WorkItem]) -> list[Prepared]:
        """Read the stored messages (one query) and parse and map them, with no transaction
        open; a failure is kept, to be raised when the message's turn comes."""
        ids = [int(w.payload["inbox_id"]) for w in batch]
        with self.services.db.read() as conn:
            stored = {row.id: row for row in conn.execute(
                sa.select(inbox.c.id, inbox.c.sender, inbox.c.status, inbox.c.body)
                .where(inbox.c.id.in_(ids)))}
        out = [Prepared(work, inbox_id, str(stored[inbox_id].sender),
                        str(stored[inbox_id].status), bytes(stored[inbox_id].body))
               for work, inbox_id in zip(batch, ids, strict=True)]
        waiting = [p for p in out if not p.done]
        there = self.mapper.map_many([(p.body, p.sender) for p in waiting]) \
            if self.mapper is not None else None
        for prepared, result in zip(waiting, there or [None] * len(waiting), strict=True):
            if result is None:
                self.parse_and_map(prepared)
            else:
                prepared.mapped, prepared.facts = result
        return out

    def parse_and_map(self, prepared: Prepared) -> None:
        """Parse and map one stored message here; a failure is kept, to be raised later."""
        try:
            prepared.mapped, prepared.facts = map_message(
                self.config, prepared.parsed(self._parse), prepared.sender)
        except Exception as exc:
            prepared.error = exc

    def _apply(self, lookups: BatchLookups, prepared: Prepared) -> tuple[int, str, str]:
        """Apply one prepared message; (inbox id, status, note) for its inbox row."""
        if prepared.error is not None:
            raise prepared.error
        mapped, facts = prepared.mapped, prepared.facts
        assert mapped is not None and facts is not None
        outcome: Outcome = self._effects(lookups, prepared).apply(mapped)
        log.info("HL7 message applied", extra={
            "inbox_id": prepared.inbox_id, "event": mapped.event, "outcome": outcome.status,
            "control_id": facts.control_id, "woke": outcome.woke})
        return prepared.inbox_id, outcome.status, outcome.note

    def _preload(self, lookups: BatchLookups, batch: list[Prepared]) -> None:
        """The batch's bulk reads: identifiers and keys, then the referrals, states and
        resources they lead to, and the parked messages that may wake."""
        ready = [p for p in batch if p.mapped is not None and not p.done]
        mapped = [p.mapped for p in ready if p.mapped is not None]
        lookups.load_patients({(str(i["system"]), str(i["value"])) for m in mapped
                               for i in [*(m.patient or {}).get("identifier", []), *m.merged]})
        keys = {key for m in mapped for key in m.referral_keys}
        lookups.load_referral_keys(keys)
        lookups.referrals.load(i for k in keys if (i := lookups.referral_ids.get(k)))
        lookups.referrals.load_sources(source_key(p.sender, p.mapped) for p in ready
                                       if p.mapped is not None and p.mapped.referral_keys)
        lookups.load_parked({f"referral:{key}" for key in keys})
        entities: set[str] = set()
        resources: set[tuple[str, str, str]] = set()
        for p in ready:
            assert p.mapped is not None
            effects = self._effects(lookups, p)
            entities |= {effects.patient_entity(p.mapped), effects.main_entity(p.mapped)}
            server = f"hl7:{p.sender}"
            found = lookups.try_get_patient((p.mapped.patient or {}).get("identifier", []))
            stored = coverage_ids(p.mapped, found[0] if found else "")  # as put_insurance
            resources |= {(server, str(r["resourceType"]), stored.get(str(r["id"]), str(r["id"])))
                          for r in p.mapped.resources}
            if found is not None:
                resources |= {(server, "Patient", found[0]), (found[1], "Patient", found[0])}
        lookups.load_states(entities - {""})
        lookups.load_resources(resources)

    def _effects(self, lookups: BatchLookups, prepared: Prepared) -> Effects:
        assert prepared.facts is not None
        return Effects(self, lookups, prepared.inbox_id, prepared.sender, prepared.facts,
                       partial(prepared.parsed, self._parse))

    def tell_sender(self, conn: Connection, body: bytes, problem: str) -> None:
        """Enhanced mode: an application ACK AE when MSH-16 asks for one (see app_ack.py)."""
        try:
            header = parse_header(body)
        except HeaderError:
            return
        queue_application_ack(self.services.work, conn, self.config, header, "AE",
                              (AckError(207, f"the message could not be applied: {problem}"),))

    def _parse(self, body: bytes, sender: str) -> Message:
        return parse_body(self.config, body, sender)


def _prepared_or_none(ahead: Ahead[Any, list[Prepared]]) -> list[Prepared] | None:
    """The batch the thread prepared, or None when reading it failed (the writer then reads
    and parses it itself, inside the usual failure handling)."""
    try:
        return ahead.result()
    except Exception as exc:
        log.warning("HL7 batch could not be prepared ahead", extra={
            "error": type(exc).__name__})
        return None


def _refresh_status(conn: Connection, ready: list[Prepared]) -> None:
    """Each message's inbox status as the write transaction sees it: a batch may be parsed
    while the one before it is written, so a status read then is only a first guess."""
    ids = [p.inbox_id for p in ready]
    status = dict(conn.execute(sa.select(inbox.c.id, inbox.c.status)
                               .where(inbox.c.id.in_(ids))).all())
    for prepared in ready:
        prepared.status = str(status.get(prepared.inbox_id, prepared.status))

