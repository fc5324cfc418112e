"""SMART Scheduling Links: slots published as a `$bulk-publish` manifest plus ndjson files of
Location, Schedule and Slot resources. We read them into scheduling_published_slots (searched
locally, soonest first), refresh with `_since=<the last manifest's transactionTime>` (a server
may ignore it and send everything: both are handled), honour the manifest's `state` filter, and
book by sending the patient to the slot's booking deep link (with `source` and
`booking-referral` added as query parameters), or its booking phone."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from referrals.errors import PeerError
from referrals.store.cursors import Cursors
from referrals.store.database import Database
from scheduling.client import fetch
from scheduling.config import Destination
from scheduling.slots import BookingRequest, Handoff, SlotOption, parse_instant
from scheduling.tables import published_slots

log = logging.getLogger("refloop.scheduling.published")

EXTENSIONS = "http://fhir-registry.smarthealthit.org/StructureDefinition/"
DEEP_LINK = EXTENSIONS + "booking-deep-link"
PHONE = EXTENSIONS + "booking-phone"
TYPES = ("Location", "Schedule", "Slot")


@dataclass(frozen=True)
class RefreshResult:
    transaction_time: str
    files: int
    slots: int
    full: bool


class PublishedSlotSource:
    kind = "smart-links"

    def __init__(self, destination: Destination, db: Database) -> None:
        self.destination = destination
        self.db = db
        #: Location and Schedule resources read so far (a `_since` delta names only changes)
        self.locations: dict[str, dict[str, Any]] = {}
        self.schedules: dict[str, dict[str, Any]] = {}

    @property
    def cursor(self) -> str:
        return f"scheduling:smart-links:{self.destination.name}"

    # -- refreshing ---------------------------------------------------------------------------

    def due(self, cursors: Cursors, now: datetime) -> bool:
        last = cursors.try_get(self.cursor + ":checked")
        if not last:
            return True
        return now - datetime.fromisoformat(last) >= \
            timedelta(minutes=self.destination.refresh_minutes)

    def refresh(self, cursors: Cursors, now: datetime | None = None,
                timeout: float = 10.0) -> RefreshResult:
        """Read the manifest (since the last transactionTime we hold) and its files."""
        at = now or datetime.now(UTC)
        since = cursors.try_get(self.cursor) or ""
        url = _with_params(self.destination.manifest_url, {"_since": since} if since else {})
        reply = fetch(url, timeout=timeout, headers={"Accept": "application/json"})
        try:
            manifest = json.loads(reply.text)
        except ValueError as exc:
            raise PeerError(f"the manifest at {self.destination.manifest_url} is not JSON"
                            ) from exc
        outputs = [o for o in manifest.get("output") or [] if o.get("type") in TYPES
                   and self._wanted(o)]
        ordered = sorted(outputs, key=lambda o: TYPES.index(o["type"]))
        slots: list[dict[str, Any]] = []
        for output in ordered:
            text = fetch(str(output["url"]), timeout=timeout,
                         headers={"Accept": "application/fhir+ndjson"}).text
            for resource in _ndjson(text):
                if resource.get("resourceType") == "Location":
                    self.locations[str(resource.get("id"))] = resource
                elif resource.get("resourceType") == "Schedule":
                    self.schedules[str(resource.get("id"))] = resource
                elif resource.get("resourceType") == "Slot":
                    slots.append(resource)
        with self.db.write() as conn:
            self._store(conn, slots, at)
            cursors.set(self.cursor, str(manifest.get("transactionTime") or ""), conn)
            cursors.set(self.cursor + ":checked", at.isoformat(), conn)
        log.info("smart scheduling links refreshed", extra={
            "destination": self.destination.name, "files": len(ordered), "slots": len(slots)})
        return RefreshResult(str(manifest.get("transactionTime") or ""), len(ordered),
                             len(slots), not since)

    def _wanted(self, output: dict[str, Any]) -> bool:
        if not self.destination.states:
            return True
        states = (output.get("extension") or {}).get("state") or []
        return not states or bool(set(states) & set(self.destination.states))

    def _store(self, conn: Connection, slots: list[dict[str, Any]], at: datetime) -> None:
        rows = []
        for slot in slots:
            start = parse_instant(slot.get("start"))
            schedule_id = str((slot.get("schedule") or {}).get("reference") or "") \
                .rsplit("/", 1)[-1]
            if start is None or not slot.get("id"):
                continue
            location_id, place = self._place(schedule_id)
            rows.append({
                "source": self.destination.name, "slot_id": str(slot["id"]),
                "schedule_id": schedule_id, "location_id": location_id,
                "status": str(slot.get("status") or "free"), "start": start,
                "end": parse_instant(slot.get("end")),
                "service_type": self._service(schedule_id), "location": place[:256],
                "deep_link": _extension(slot, DEEP_LINK, "valueUrl"),
                "phone": _extension(slot, PHONE, "valueString")[:64], "updated_at": at})
        if not rows:
            return
        insert = (postgresql.insert(published_slots) if conn.dialect.name == "postgresql"
                  else sqlite.insert(published_slots))
        excluded = insert.excluded
        conn.execute(insert.on_conflict_do_update(
            index_elements=["source", "slot_id"],
            set_={c: getattr(excluded, c) for c in ("schedule_id", "location_id", "status",
                                                    "start", "end", "service_type",
                                                    "location", "deep_link", "phone",
                                                    "updated_at")}), rows)

    def _place(self, schedule_id: str) -> tuple[str, str]:
        schedule = self.schedules.get(schedule_id) or {}
        for actor in schedule.get("actor") or []:
            reference = str(actor.get("reference") or "")
            if reference.startswith("Location/"):
                location_id = reference.split("/", 1)[1]
                location = self.locations.get(location_id) or {}
                return location_id, _describe(location) or str(actor.get("display") or "")
        return "", ""

    def _service(self, schedule_id: str) -> str:
        schedule = self.schedules.get(schedule_id) or {}
        for concept in schedule.get("serviceType") or []:
            for coding in concept.get("coding") or []:
                return f"{coding.get('system', '')}|{coding.get('code', '')}"[:256]
        return ""

    # -- finding and booking ------------------------------------------------------------------

    def find(self, after: datetime, until: datetime, limit: int) -> list[SlotOption]:
        query = sa.select(published_slots).where(
            published_slots.c.source == self.destination.name,
            published_slots.c.status == "free", published_slots.c.start > after,
            published_slots.c.start < until)
        if self.destination.service_type:
            query = query.where(published_slots.c.service_type == self.destination.service_type)
        with self.db.read() as conn:
            rows = conn.execute(query.order_by(published_slots.c.start,
                                               published_slots.c.slot_id)
                                .limit(limit)).mappings().all()
        return [_option(r) for r in rows]

    def get(self, key: str) -> SlotOption | None:
        with self.db.read() as conn:
            row = conn.execute(sa.select(published_slots).where(
                published_slots.c.source == self.destination.name,
                published_slots.c.slot_id == key, published_slots.c.status == "free")
            ).mappings().first()
        if row is None:
            return None
        option = _option(row)
        return option if option.start > datetime.now(UTC) else None

    def book(self, option: SlotOption, request: BookingRequest) -> Handoff:
        link = str(option.detail.get("deep_link") or "")
        if link:
            return Handoff(_with_params(link, {"source": "refloop",
                                               "booking-referral": request.referral_id}))
        phone = str(option.detail.get("phone") or "")
        return Handoff(f"tel:{phone}" if phone else "")

    def cancel(self, server: str, appointment_id: str, reason: str) -> list[str]:
        return []  # booked on the publisher's own site: cancelled there


def _option(row: Any) -> SlotOption:
    start = row["start"]
    start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
    end = row["end"]
    if end is not None:
        end = end.replace(tzinfo=UTC) if end.tzinfo is None else end.astimezone(UTC)
    return SlotOption(key=row["slot_id"], start=start, end=end, location=row["location"],
                      detail={"deep_link": row["deep_link"], "phone": row["phone"]})


def _ndjson(text: str) -> list[dict[str, Any]]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            found.append(json.loads(line))
        except ValueError:
            log.warning("smart scheduling links: unreadable ndjson line",
                        extra={"line": number})
    return found


def _extension(resource: dict[str, Any], url: str, key: str) -> str:
    for extension in resource.get("extension") or []:
        if extension.get("url") == url:
            return str(extension.get(key) or "")
    return ""


def _describe(location: dict[str, Any]) -> str:
    name = str(location.get("name") or "")
    address = location.get("address") or {}
    parts = [*address.get("line", []), address.get("city", ""), address.get("state", "")]
    where = ", ".join(str(p) for p in parts if p)
    return f"{name}, {where}" if name and where else name or where


def _with_params(url: str, params: dict[str, str]) -> str:
    """`url` with query parameters added (parsed, never string-concatenated)."""
    if not params:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in params]
    return urlunsplit(parts._replace(query=urlencode([*query, *params.items()])))
