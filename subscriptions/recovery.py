"""Recovering missed events on topic-based Subscriptions (R4 backport, R5).

A gap in the event numbers asks the server for exactly the missing events with `$events`
(`Subscription/{id}/$events?eventsSinceNumber=a&eventsUntilNumber=b&content=id-only`); each
focused ServiceRequest is re-read and goes through the same intake as a notification. `$status`
compares the server's event count with ours (after a silence longer than two heartbeat periods),
and a count ahead of ours is a gap too. Servers that offer neither (HAPI FHIR 8.8, most R4 classic
servers) fall back to the broad `_lastUpdated` reconciliation, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from referrals.errors import InboundError, PeerError
from referrals.store.work import WorkItem, WorkQueue
from subscriptions.client import FhirClient
from subscriptions.intake import Intake, read_service_request
from subscriptions.mapping import matches_criteria
from subscriptions.notification import Notification, parse_notification_bundle
from subscriptions.registry import Registration, Registry

EVENTS_KIND = "subscriptions.events"
#: answers that mean "this server does not offer the operation (or not this range)"
UNSUPPORTED = (400, 404, 405, 410, 422, 501)
TOPIC_FLAVOURS = ("r4-backport", "r5-topic")

log = logging.getLogger("refloop.subscriptions.recovery")

ClientFor = Callable[[str], FhirClient]
ParamsFor = Callable[[str, str], list[tuple[str, str]]]  # (server, registered criteria)


def schedule_events(work: WorkQueue, hook_id: str, since: int, until: int, *,
                    delay: float = 0.0, conn: Any = None) -> int | None:
    """Ask for events `since`..`until` (inclusive) after `delay` seconds (in-flight ones may
    still arrive: the intake skips what was processed meanwhile)."""
    return work.enqueue(EVENTS_KIND, {"hook_id": hook_id, "since": since, "until": until},
                        key=f"{EVENTS_KIND}:{hook_id}:{since}:{until}",
                        run_at=datetime.now(UTC) + timedelta(seconds=delay), conn=conn)


@dataclass
class Recovery:
    registry: Registry
    intake: Intake
    work: WorkQueue
    client_for: ClientFor
    params_for: ParamsFor
    reconcile: Callable[[str, str], Any]  # (server, why): schedule the broad catch-up

    def handle_events(self, item: WorkItem) -> None:
        """Work of kind `subscriptions.events`."""
        row = self.registry.get(str(item.payload["hook_id"]))
        since, until = int(item.payload["since"]), int(item.payload["until"])
        note = self.try_events(row, since, until)
        if note is None:
            self.reconcile(row.server, f"events {since}-{until} missed; no $events")
            return
        outcomes = self.apply(row, note, f"$events:{since}-{until}")
        log.info("events recovered", extra={"server": row.server, "since": since,
                                            "until": until, "outcomes": outcomes})

    def try_events(self, row: Registration, since: int, until: int) -> Notification | None:
        """The server's `$events` answer, or None when it offers no such operation."""
        if not row.subscription_id or row.flavour not in TOPIC_FLAVOURS:
            return None
        return self._operation(row, "$events", [("eventsSinceNumber", str(since)),
                                                ("eventsUntilNumber", str(until)),
                                                ("content", "id-only")])

    def apply(self, row: Registration, note: Notification, source_message: str) -> list[str]:
        """Re-read each focused ServiceRequest and apply it; an event without a focus (empty
        content) means a broad catch-up."""
        client = self.client_for(row.server)
        params = self.params_for(row.server, row.criteria)
        outcomes: list[str] = []
        if any(e.focus is None for e in note.events):
            self.reconcile(row.server, "$events without focus")
        focuses = dict.fromkeys(e.focus for e in note.events
                                if e.focus and e.focus.startswith("ServiceRequest/"))
        for focus in focuses:
            sr_id = focus.partition("/")[2]
            fetched = read_service_request(client, sr_id)
            sr = fetched.service_request
            if sr is not None and not matches_criteria(sr, params):
                outcomes.append(f"{focus}: ignored (criteria)")
                continue
            outcomes.append(f"{focus}: " + self.intake.apply(
                row.server, fetched, sr_id=sr_id, source=f"fhir:{row.server}",
                source_message=source_message))
        return outcomes

    def check_status(self, row: Registration) -> str | None:
        """`$status`: the server's view of our Subscription. Events the server counted beyond
        ours are recovered; `error`/`off` schedules the catch-up (which re-activates it).
        Returns the status, or None when the server offers no `$status`."""
        note = self._operation(row, "$status", [])
        if note is None:
            return None
        counted_text, ours_text = note.events_since_start or "", row.last_event_number or ""
        counted = int(counted_text) if counted_text.isdigit() else None
        ours = int(ours_text) if ours_text.isdigit() else 0
        if counted is not None and counted > ours:
            schedule_events(self.work, row.hook_id, ours + 1, counted)
        if note.status in ("error", "off"):
            self.reconcile(row.server, f"$status says {note.status}")
        return note.status

    def _operation(self, row: Registration, name: str, params: list[tuple[str, str]]
                   ) -> Notification | None:
        client = self.client_for(row.server)
        try:
            reply = client.send("GET", f"Subscription/{row.subscription_id}/{name}",
                                params=params, ok=(200, *UNSUPPORTED))
        except PeerError as exc:
            if exc.retryable:
                raise
            return None
        if reply.status != 200 or not isinstance(reply.body, dict):
            return None
        body = reply.body
        if body.get("resourceType") == "Bundle" and body.get("type") == "searchset":
            # $status answers a searchset of status resources: read it as a notification
            body = {**body, "type": "history"}
        try:
            return parse_notification_bundle(body)
        except InboundError:
            log.warning("unreadable answer", extra={"server": row.server, "operation": name})
            return None
