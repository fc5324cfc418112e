"""Work handler of `subscriptions.notification`: what a stored notification means.

Notifications are hints. For referral hooks each focused ServiceRequest is re-read from the EHR
and handed to the intake; empty notifications, event-number gaps and counters that went
backwards (a server restart) schedule a catch-up reconciliation. For hooks opened by another
consumer (open_hook), ONE work item of the consumer's kind carries the parsed notification.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fhir_http.reply import UNSTORABLE_ESCAPE, without_unstorable
from referrals.errors import InboundError, PeerError
from referrals.store.inbox import Inbox
from referrals.store.schema import inbox
from referrals.store.work import WorkItem, WorkQueue
from subscriptions.client import FhirClient
from subscriptions.intake import (
    Fetched,
    Held,
    Intake,
    read_service_request,
    read_service_requests,
)
from subscriptions.mapping import matches_criteria
from subscriptions.notification import Notification, parse_notification
from subscriptions.recovery import TOPIC_FLAVOURS, schedule_events
from subscriptions.registry import REFERRAL_KIND, Hook, Registration, Registry

RECONCILE_KIND = "subscriptions.reconcile"
#: ServiceRequests re-read by one search (`_id=a,b,...`)
READ_GROUP = 20

log = logging.getLogger("refloop.subscriptions.processing")

ClientFor = Callable[[str], FhirClient]
#: (server base URL, ServiceRequest id)
ReadKey = tuple[str, str]
Opened = tuple[Hook, Notification]


def to_consumer_payload(inbox_id: int, hook: Hook, note: Notification) -> dict[str, Any]:
    """The contract for other consumers of hooks (docs/subscriptions.md)."""
    return {"inbox_id": inbox_id, "server": hook.server, "hook_id": hook.id,
            "notification_type": note.type, "subscription": note.subscription,
            "events": [{"event_number": e.event_number, "focus": e.focus} for e in note.events],
            "resources": [dict(r) for r in note.resources]}


def schedule_reconcile(work: WorkQueue, server: str, why: str, *, delay: float = 0.0,
                       bucket_seconds: float = 10.0, conn: Any = None) -> int | None:
    """One catch-up per server and time bucket, however many triggers ask for it."""
    run_at = datetime.now(UTC) + timedelta(seconds=delay)
    bucket = int(run_at.timestamp() // bucket_seconds)
    return work.enqueue(RECONCILE_KIND, {"server": server, "why": why},
                        key=f"{RECONCILE_KIND}:{server}:{bucket}", run_at=run_at, conn=conn)


@dataclass
class NotificationHandler:
    #: notifications a worker claims per round (unless worker_batch says otherwise): commits
    #: and EHR searches are per batch, and 100 is what reaches 500 referrals/s against a local
    #: EHR peer (docs/interop.md, "Processing")
    batch_size: ClassVar[int] = 100
    inbox: Inbox
    work: WorkQueue
    registry: Registry
    intake: Intake
    client_for: ClientFor
    gap_grace_seconds: float = 30.0
    read_concurrency: int = 8
    #: the configured referral categories of a server, applied to registrations whose
    #: criteria name none (made before categories existed)
    categories_for: Callable[[str], tuple[str, ...]] | None = None
    _batch: threading.local = field(default_factory=threading.local, init=False, repr=False)
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    _pool_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def prepare(self, items: Sequence[WorkItem]) -> None:
        """Re-read, concurrently, the ServiceRequests a worker's batch of notifications focus
        (called by referrals.worker.Worker before it runs the batch's items in order).

        Each ServiceRequest is read once however many notifications of the batch name it; every
        read starts after all of them were stored, so it is at least as new as each. A read
        serves only the items of this batch, once each (a retry reads again); the intake's
        version check still refuses an older read applied after a newer one.
        """
        self._batch.items, self._batch.reads, self._batch.opened = set(), {}, {}
        opened: dict[int, Opened] = {}
        stored = self._stored([int(item.payload["inbox_id"]) for item in items])
        for item in items:
            try:
                found = self._open(item, stored.get(int(item.payload["inbox_id"])))
            except (InboundError, KeyError, ValueError):
                continue  # its handler says what is wrong
            if found is not None:
                opened[item.id] = found
        unique = list(dict.fromkeys(key for hook, note in opened.values()
                                    for key in _read_keys(hook, note)))
        self._batch.reads = self._submit_reads(unique)
        self._batch.opened = opened
        self._batch.items = set(opened)
        self._batch.order = [item for item in items if item.id in opened]
        self._batch.applied = set()

    def completed(self, item: WorkItem) -> bool:
        """Did this thread's last call complete `item`'s work item itself (batched)? The worker
        then does not complete it again."""
        done: set[int] = getattr(self._batch, "completed", set())
        if item.id in done:
            done.discard(item.id)
            return True
        return False

    def __call__(self, item: WorkItem) -> None:
        applied: set[int] = getattr(self._batch, "applied", set())
        try:
            if item.id in applied:
                self._batch.completed = {item.id}
                return  # applied and completed with an earlier item of its batch
            if self._apply_batch(item):
                self._batch.completed = {item.id}
            else:
                self._handle(item)
        finally:
            items: set[int] | None = getattr(self._batch, "items", None)
            if items is not None:
                items.discard(item.id)
            applied.discard(item.id)

    def _apply_batch(self, first: WorkItem) -> bool:
        """Apply `first` and the prepared referral notifications after it in its batch in ONE
        write transaction (one commit instead of two per notification): each in a savepoint,
        with its inbox status, its event tracking and its work item's completion. The EHR reads
        all finish before the transaction starts. An item whose read failed, or that fails in
        its savepoint, is left out and runs alone afterwards (the worker's retry and quarantine
        rules). False when there is nothing to batch (the item then runs alone)."""
        order: list[WorkItem] = getattr(self._batch, "order", [])
        if first not in order or not first.lease_owner:
            return False
        prepared: dict[int, Opened] = getattr(self._batch, "opened", {})
        candidates = [w for w in order[order.index(first):] if w.id in prepared
                      and prepared[w.id][0].deliver_kind == REFERRAL_KIND]
        if len(candidates) < 2 or candidates[0] is not first:
            return False
        ready: list[tuple[WorkItem, Hook, Notification, dict[str, Fetched]]] = []
        for work in candidates:
            hook, note = prepared[work.id]
            focuses = list(dict.fromkeys(e.focus for e in note.events))
            reads, failure = self._fetch_all(work.id, hook.server, focuses)
            if failure is None:
                ready.append((work, hook, note, reads))
        done: list[WorkItem] = []
        with self.inbox.db.write() as conn:
            # read once for the batch, kept current by its writes: the hooks' rows and the
            # versions held of every resource the batch stores
            rows: dict[str, Registration] = {}
            held: Held = self._held(ready, conn)
            for work, hook, note, reads in ready:
                saved_rows, saved_held = dict(rows), dict(held)
                try:
                    with conn.begin_nested():
                        rows[hook.id] = self._apply_one(
                            int(work.payload["inbox_id"]), hook, note, reads, conn,
                            rows.get(hook.id), held)
                except Exception:  # it runs alone next, with the worker's rules
                    rows, held = saved_rows, saved_held  # what its savepoint undid
                    log.info("notification left out of its batch", extra={"work_item": work.id})
                    continue
                done.append(work)
            self.work.complete_many(done, first.lease_owner, conn)
        for work in done:
            prepared.pop(work.id, None)
        self._batch.applied = {w.id for w in done}
        return first in done

    def close(self) -> None:
        """Stop the re-read threads (tests and shutdown; the worker threads are done)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _executor(self) -> ThreadPoolExecutor:
        # one bounded pool shared by every worker thread; its threads keep their keep-alive
        # sessions from batch to batch
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max(1, self.read_concurrency),
                                                thread_name_prefix="ehr-read")
            return self._pool

    def _submit_reads(self, keys: list[ReadKey]) -> dict[ReadKey, Future[Fetched]]:
        """One search per server and group of up to READ_GROUP ServiceRequests, run
        concurrently on the pool; a future per ServiceRequest."""
        pool = self._executor()
        futures: dict[ReadKey, Future[Fetched]] = {}
        by_server: dict[str, list[str]] = {}
        for server, rid in keys:
            by_server.setdefault(server, []).append(rid)
        for server, ids in by_server.items():
            for start in range(0, len(ids), READ_GROUP):
                group = ids[start:start + READ_GROUP]
                searched = pool.submit(self._read_group, server, group)
                for rid in group:
                    futures[(server, rid)] = _pick(searched, rid)
        return futures

    def _read_group(self, server: str, ids: list[str]) -> dict[str, Fetched]:
        client = self.client_for(server)
        if len(ids) == 1:
            return {ids[0]: read_service_request(client, ids[0])}
        return read_service_requests(client, ids)

    def _stored(self, ids: list[int]) -> dict[int, tuple[str, bytes]]:
        """(status, body) of these inbox rows, in one query."""
        with self.inbox.db.read() as conn:
            rows = conn.execute(sa.select(inbox.c.id, inbox.c.status, inbox.c.body)
                                .where(inbox.c.id.in_(ids))).all()
        return {int(r.id): (str(r.status), bytes(r.body)) for r in rows}

    def _open(self, item: WorkItem, stored: tuple[str, bytes] | None = None) -> Opened | None:
        """The item's hook and parsed notification; None when it was processed already."""
        if stored is None:
            message = self.inbox.get(int(item.payload["inbox_id"]))
            stored = (message.status, message.body)
        status, raw = stored
        if status not in ("received",):
            return None  # done before a crash, or quarantined
        # a hook's server and kind never change: the cached row serves
        hook = self.registry.try_get_hook(str(item.payload["hook_id"]), cached=True)
        if hook is None:
            raise InboundError("the hook of this notification no longer exists")
        body = json.loads(raw) if raw.strip() else None
        if UNSTORABLE_ESCAPE.search(raw):  # U+0000, a surrogate: kept out, as in replies
            body = without_unstorable(body)
        return hook, parse_notification(str(item.payload["method"]),
                                        str(item.payload["subpath"]), body)

    def _fetch(self, item_id: int, server: str, rid: str) -> Fetched:
        """The batch's read of this ServiceRequest, or a fresh one."""
        items: set[int] = getattr(self._batch, "items", set())
        future: Future[Fetched] | None = (getattr(self._batch, "reads", {}).get((server, rid))
                                          if item_id in items else None)
        if future is not None:
            try:
                return future.result()
            except PeerError:
                raise
            except Exception:  # an unexpected failure in the pool: read here, in the open
                log.exception("concurrent re-read failed; reading again")
        return read_service_request(self.client_for(server), rid)

    def _handle(self, item: WorkItem) -> None:
        inbox_id = int(item.payload["inbox_id"])
        prepared: dict[int, Opened] = getattr(self._batch, "opened", {})
        opened = prepared.pop(item.id, None) or self._open(item)
        if opened is None:
            return
        hook, note = opened
        if hook.deliver_kind != REFERRAL_KIND:
            self._forward(inbox_id, hook, note)
            return
        focuses = list(dict.fromkeys(e.focus for e in note.events))
        reads, failure = self._fetch_all(item.id, hook.server, focuses)
        # one transaction (one commit) for the referral changes, the event tracking and the
        # inbox status; the hook's row is updated last, so concurrent workers hold it briefly
        with self.inbox.db.write() as conn:
            if failure is None:
                self._apply_one(inbox_id, hook, note, reads, conn)
            else:
                row = self.registry.get(hook.id, conn=conn)
                self._track_events(hook, note, row, conn)
        if failure is not None:
            raise failure  # the events were tracked; the item is retried

    def _held(self, ready: Sequence[tuple[WorkItem, Hook, Notification, dict[str, Fetched]]],
              conn: Connection) -> Held:
        """The versions held of every resource the batch may store, in one query."""
        keys = {(hook.server, r["resourceType"], str(r["id"]))
                for _, hook, _, reads in ready for fetched in reads.values()
                for r in ([fetched.service_request] if fetched.service_request else [])
                + list(fetched.included.values())}
        current = self.intake.resources.current_many(keys, conn)
        return {key: current.get(key) for key in keys}

    def _apply_one(self, inbox_id: int, hook: Hook, note: Notification,
                   reads: dict[str, Fetched], conn: Connection,
                   row: Registration | None = None, held: Held | None = None) -> Registration:
        """One notification's referral changes, event tracking and inbox status on `conn`;
        returns the hook's row as it is now (`row`: as read earlier in this transaction)."""
        row = row or self.registry.get(hook.id, conn=conn)
        focuses = sorted(dict.fromkeys(e.focus for e in note.events),
                         key=lambda f: f or "")  # lock order
        outcomes = [self._event(hook, focus, reads.get(focus or ""), inbox_id, row.criteria,
                                conn, held) for focus in focuses]
        last = self._track_events(hook, note, row, conn)
        self.inbox.mark(inbox_id, "processed", "; ".join(o for o in outcomes if o)[:4000],
                        conn=conn)
        return replace(row, last_event_number=last)

    def _fetch_all(self, item_id: int, server: str, focuses: list[str | None]
                   ) -> tuple[dict[str, Fetched], PeerError | None]:
        """The ServiceRequests the focuses name, read outside any transaction."""
        reads: dict[str, Fetched] = {}
        for focus in focuses:
            if focus and focus.startswith("ServiceRequest/"):
                try:
                    reads[focus] = self._fetch(item_id, server, focus.partition("/")[2])
                except PeerError as exc:
                    return reads, exc
        return reads, None

    def _forward(self, inbox_id: int, hook: Hook, note: Notification) -> None:
        with self.inbox.db.write() as conn:
            self.work.enqueue(hook.deliver_kind, to_consumer_payload(inbox_id, hook, note),
                              key=f"{hook.deliver_kind}:{inbox_id}", conn=conn)
            self.registry.record_notification(hook.id, note.type, _last_number(note), conn=conn)
            self.inbox.mark(inbox_id, "processed", f"forwarded to {hook.deliver_kind}",
                            conn=conn)

    def _event(self, hook: Hook, focus: str | None, fetched: Fetched | None, inbox_id: int,
               criteria: str, conn: Connection, held: Held | None = None) -> str:
        if focus is None:
            schedule_reconcile(self.work, hook.server, "empty notification", conn=conn)
            return "empty: catch-up scheduled"
        if fetched is None:
            return f"{focus}: not a ServiceRequest, ignored"
        sr = fetched.service_request
        params = detection_params(criteria, self.categories_for(hook.server)
                                  if self.categories_for is not None else ())
        if sr is not None and not matches_criteria(sr, params):
            return f"{focus}: does not match {criteria}, ignored"
        outcome = self.intake.apply(hook.server, fetched, sr_id=focus.partition("/")[2],
                                    source=f"fhir:{hook.server}",
                                    source_message=f"inbox:{inbox_id}", conn=conn,
                                    held=held)
        return f"{focus}: {outcome}"

    def _track_events(self, hook: Hook, note: Notification, row: Registration,
                      conn: Connection) -> str | None:
        """Health, and catch-up on gaps (`$events` for the missing numbers on topic-based
        Subscriptions, else reconciliation), counter restarts, and error/off status; `row` holds
        the highest event number seen before. Returns the highest one now."""
        last = row.last_event_number or ""
        numbers = [int(e.event_number) for e in note.events if e.event_number]
        high = int(last) if last.isdigit() else None
        newest = max(numbers) if numbers else None
        advance = newest is not None and (high is None or newest > high or newest <= 1)
        self.registry.record_notification(hook.id, note.type,
                                          str(newest) if advance else None, conn=conn)
        if note.status in ("error", "off"):
            schedule_reconcile(self.work, hook.server, f"subscription status {note.status}",
                               conn=conn)
        now = str(newest) if advance else row.last_event_number
        if newest is None or high is None:
            return now
        if min(numbers) > high + 1:
            if row.subscription_id and row.flavour in TOPIC_FLAVOURS:
                schedule_events(self.work, hook.id, high + 1, min(numbers) - 1,
                                delay=self.gap_grace_seconds, conn=conn)
            else:
                schedule_reconcile(self.work, hook.server, f"event gap after {high}",
                                   delay=self.gap_grace_seconds, conn=conn)
        elif newest <= 1 < high:
            schedule_reconcile(self.work, hook.server, "event counter restarted", conn=conn)
        return now


def detection_params(criteria: str, categories: Sequence[str]) -> list[tuple[str, str]]:
    """The parameters Refloop checks itself: the registered criteria's, plus the configured
    categories when the criteria name none (registrations made before categories existed)."""
    params = _params(criteria)
    if not any(name.split(":")[0] == "category" for name, _ in params):
        params.append(("category", ",".join(categories)))
    return params


def _pick(searched: Future[dict[str, Fetched]], rid: str) -> Future[Fetched]:
    """A future of one ServiceRequest's read, out of its group's search."""
    picked: Future[Fetched] = Future()

    def done(group: Future[dict[str, Fetched]]) -> None:
        error = group.exception()
        if error is not None:
            picked.set_exception(error)
        else:
            picked.set_result(group.result()[rid])

    searched.add_done_callback(done)
    return picked


def _read_keys(hook: Hook, note: Notification) -> list[ReadKey]:
    """The EHR reads a notification of a referral hook needs."""
    if hook.deliver_kind != REFERRAL_KIND:
        return []
    focuses = dict.fromkeys(e.focus for e in note.events if e.focus)
    return [(hook.server, focus.partition("/")[2]) for focus in focuses
            if focus.startswith("ServiceRequest/")]


def _params(criteria: str) -> list[tuple[str, str]]:
    query = criteria.split("?", 1)[1] if "?" in criteria else ""
    return [(k, v) for k, _, v in (p.partition("=") for p in query.split("&") if p)]


def _last_number(note: Notification) -> str | None:
    numbers = [e.event_number for e in note.events if e.event_number]
    return max(numbers, key=lambda n: int(n or 0)) if numbers else None

