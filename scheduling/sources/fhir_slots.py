"""Slots from the EHR's FHIR server: Schedule and Slot searches, booking without double-booking.

Finding: the destination's Schedules (`Schedule?actor=...&active=true`, with their actors
included for the displays) are read once every few minutes; slots are one search
`Slot?schedule=...&status=free&start=gt...&start=lt...&_sort=start&_count=N`.

Booking: the Slot is re-read for its version, then ONE transaction updates it to `busy` with
`ifMatch` on that version and creates the Appointment (booked, the patient, the practitioner and
location of the Schedule, basedOn the ServiceRequest, a stable identifier). Of two patients racing
for one slot, the server lets only the first version check pass: the loser gets 412 (or 409) and
nothing of its transaction is kept. A server without transactions gets the same order in two
requests (Slot with If-Match first, then the Appointment; the Slot is freed again when the
Appointment cannot be created).
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from fhir_http.reply import Reply, diagnostics
from referrals.errors import PeerError
from scheduling.client import FhirClient
from scheduling.config import Destination
from scheduling.slots import (
    APPOINTMENT_SYSTEM,
    Booked,
    BookingRequest,
    SlotOption,
    SlotTaken,
    instant,
    parse_instant,
)

#: how long the destination's Schedules (and their actors' names) are reused
SCHEDULES_SECONDS = 300.0
LOST = (409, 412)
#: slot search windows: the first is a day; a short one is followed by one twice as long
FIRST_WINDOW_HOURS = 24
MIN_WINDOW = timedelta(hours=1)


def has_interaction(capability: dict[str, Any], code: str) -> bool:
    for rest in capability.get("rest") or []:
        if any(i.get("code") == code for i in rest.get("interaction") or []):
            return True
    return False


class FhirSlotSource:
    kind = "fhir"

    def __init__(self, destination: Destination, client: FhirClient,
                 capability: dict[str, Any] | None = None) -> None:
        self.destination = destination
        self.client = client
        self._capability = capability
        self._schedules: tuple[float, dict[str, dict[str, Any]]] | None = None
        self._width = timedelta(hours=FIRST_WINDOW_HOURS)
        self._lock = threading.Lock()

    # -- finding ------------------------------------------------------------------------------

    def schedules(self) -> dict[str, dict[str, Any]]:
        """Schedule id -> {"actors": [references], "clinician": str, "location": str}."""
        with self._lock:
            if self._schedules and self._schedules[0] > time.monotonic():
                return self._schedules[1]
        params = [("active", "true"), ("_include", "Schedule:actor"), ("_count", "200")]
        if self.destination.schedule_actors:
            params.append(("actor", ",".join(self.destination.schedule_actors)))
        if self.destination.service_type:
            params.append(("service-type", self.destination.service_type))
        found: dict[str, dict[str, Any]] = {}
        names: dict[str, str] = {}
        for page in self.client.pages("Schedule", params, max_pages=20):
            for entry in page.get("entry") or []:
                resource = entry.get("resource") or {}
                if resource.get("resourceType") == "Schedule":
                    found[str(resource["id"])] = resource
                else:
                    names[f"{resource.get('resourceType')}/{resource.get('id')}"] = \
                        display_of(resource)
        chosen = {sid: _schedule_facts(s, names) for sid, s in found.items()}
        with self._lock:
            self._schedules = (time.monotonic() + SCHEDULES_SECONDS, chosen)
        return chosen

    def find(self, after: datetime, until: datetime, limit: int) -> list[SlotOption]:
        """The next `limit` free slots, soonest first.

        Searched window by window (`_sort=start&_count=limit` within each): a window that
        holds a page answers alone; a shorter one is followed by one twice as long. A server
        sorts only the window's slots: sorting a whole calendar for one page is slow
        (sekmet-fhir took 14 s over 20,000 slots). The next search starts from the width
        that last held a page (the calendar's density)."""
        schedules = self.schedules()
        if not schedules:
            return []
        found: list[SlotOption] = []
        begin, width, first = after, self._width, True
        while len(found) < limit and begin < until:
            end = min(until, begin + width)
            options = self._window(schedules, begin, end, first, limit - len(found))
            found += options
            if len(found) >= limit:
                self._width = max(MIN_WINDOW, width)
            begin, first, width = end, False, width * 2
        return sorted(found, key=lambda o: o.start)[:limit]

    def _window(self, schedules: dict[str, dict[str, Any]], begin: datetime, end: datetime,
                first: bool, count: int) -> list[SlotOption]:
        params = [("schedule", ",".join(f"Schedule/{s}" for s in sorted(schedules))),
                  ("status", "free"), ("start", f"{'gt' if first else 'ge'}{instant(begin)}"),
                  ("start", f"lt{instant(end)}"), ("_sort", "start"), ("_count", str(count))]
        if self.destination.service_type:
            params.append(("service-type", self.destination.service_type))
        bundle = self.client.search("Slot", params)
        options = [self._option(e["resource"], schedules) for e in bundle.get("entry") or []
                   if (e.get("resource") or {}).get("resourceType") == "Slot"]
        return sorted((o for o in options if o is not None), key=lambda o: o.start)[:count]

    def get(self, key: str) -> SlotOption | None:
        if not key.startswith("Slot/") or key.count("/") != 1:
            return None
        try:
            reply = self.client.send("GET", key, ok=(200, 404, 410))
        except PeerError:
            raise
        if reply.status != 200 or not isinstance(reply.body, dict):
            return None
        option = self._option(reply.body, self.schedules(), reply.version)
        if option is None or reply.body.get("status") != "free":
            return None
        return option

    def _option(self, slot: dict[str, Any], schedules: dict[str, dict[str, Any]],
                version: str = "") -> SlotOption | None:
        schedule = str((slot.get("schedule") or {}).get("reference") or "")
        facts = schedules.get(schedule.rsplit("/", 1)[-1]) if schedule else None
        start = parse_instant(slot.get("start"))
        if facts is None or start is None:
            return None  # not one of this destination's calendars
        return SlotOption(
            key=f"Slot/{slot['id']}", start=start, end=parse_instant(slot.get("end")),
            location=facts["location"], clinician=facts["clinician"],
            detail={"schedule": schedule, "actors": facts["actors"],
                    "version": version or str((slot.get("meta") or {}).get("versionId") or ""),
                    "service_type": slot.get("serviceType") or []})

    # -- booking ------------------------------------------------------------------------------

    def capability(self) -> dict[str, Any]:
        if self._capability is None:
            body = self.client.read("metadata").body
            self._capability = body if isinstance(body, dict) else {}
        return self._capability

    def book(self, option: SlotOption, request: BookingRequest) -> Booked:
        slot_reply = self.client.send("GET", option.key, ok=(200, 404, 410))
        slot = slot_reply.body
        if slot_reply.status != 200 or not isinstance(slot, dict):
            raise SlotTaken(f"{option.key} is gone")
        if slot.get("status") != "free":
            existing = self.ours(request, option.key)
            if existing is not None:
                return existing  # a retry of our own booking
            raise SlotTaken(f"{option.key} is {slot.get('status')}")
        version = slot_reply.version
        appointment = self._appointment(option, slot, request)
        busy = {**slot, "status": "busy"}
        if has_interaction(self.capability(), "transaction"):
            reply = self._transaction(busy, version, appointment, request, option)
        else:
            reply = self._in_two_steps(busy, version, appointment, request, option)
        return Booked(self.client.base, reply)

    def _transaction(self, busy: dict[str, Any], version: str, appointment: dict[str, Any],
                     request: BookingRequest, option: SlotOption) -> dict[str, Any]:
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": self.client.url(f"Slot/{busy['id']}"), "resource": busy,
             "request": {"method": "PUT", "url": f"Slot/{busy['id']}",
                         "ifMatch": f'W/"{version}"'}},
            {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": appointment,
             "request": {"method": "POST", "url": "Appointment",
                         "ifNoneExist": _identifier_query(request, option)}}]}
        reply = self.client.send("POST", "", body=bundle, ok=(200, *LOST, 400, 422))
        if reply.status != 200:
            existing = self.ours(request, option.key)
            if existing is not None:
                return existing.appointment
            if reply.status in LOST or _is_conflict(reply):
                raise SlotTaken(f"{option.key} was booked by somebody else")
            raise PeerError(f"booking transaction refused ({reply.status}): "
                            f"{_issues(reply)}", retryable=False)
        location = str(((reply.body.get("entry") or [{}, {}])[1].get("response") or {})
                       .get("location") or "")
        return self._read_appointment(location)

    def _in_two_steps(self, busy: dict[str, Any], version: str, appointment: dict[str, Any],
                      request: BookingRequest, option: SlotOption) -> dict[str, Any]:
        put = self.client.send("PUT", f"Slot/{busy['id']}", body=busy,
                               headers={"If-Match": f'W/"{version}"'}, ok=(200, 201, *LOST))
        if put.status in LOST:
            raise SlotTaken(f"{option.key} was booked by somebody else")
        try:
            created = self.client.send("POST", "Appointment", body=appointment, headers={
                "If-None-Exist": _identifier_query(request, option)}, ok=(200, 201))
        except PeerError:
            freed = {**busy, "status": "free"}
            self.client.send("PUT", f"Slot/{busy['id']}", body=freed,
                             headers={"If-Match": f'W/"{put.version}"'}, ok=(200, *LOST))
            raise
        return self._read_appointment(str(created.headers.get("Location") or
                                           f"Appointment/{created.body['id']}"))

    def _read_appointment(self, location: str) -> dict[str, Any]:
        path = "/".join(location.split("/_history")[0].rstrip("/").split("/")[-2:])
        body = self.client.read(path).body
        if not isinstance(body, dict) or body.get("resourceType") != "Appointment":
            raise PeerError(f"reading the new {path} gave no Appointment")
        return body

    def ours(self, request: BookingRequest, key: str) -> Booked | None:
        """The Appointment we booked for `request` in slot `key`, found by its identifier."""
        bundle = self.client.search("Appointment", [
            ("identifier", f"{APPOINTMENT_SYSTEM}|{request.identifier_for(key)}")])
        for entry in bundle.get("entry") or []:
            resource = entry.get("resource") or {}
            if resource.get("resourceType") == "Appointment" and \
                    resource.get("status") in ("booked", "pending"):
                return Booked(self.client.base, resource)
        return None

    def _appointment(self, option: SlotOption, slot: dict[str, Any],
                     request: BookingRequest) -> dict[str, Any]:
        participants: list[dict[str, Any]] = [
            {"actor": {"reference": request.patient,
                       **({"display": request.patient_display}
                          if request.patient_display else {})},
             "required": "required", "status": "accepted"}]
        for actor in option.detail.get("actors", []):
            participants.append({"actor": {"reference": actor["reference"],
                                           "display": actor["display"]},
                                 "required": "required", "status": "accepted"})
        appointment: dict[str, Any] = {
            "resourceType": "Appointment", "status": "booked",
            "identifier": [{"system": APPOINTMENT_SYSTEM,
                            "value": request.identifier(option)}],
            "slot": [{"reference": option.key}],
            "start": slot["start"], "end": slot.get("end") or slot["start"],
            "created": instant(datetime.now().astimezone()),
            "basedOn": [{"reference": request.service_request}],
            "participant": participants,
        }
        if slot.get("serviceType"):
            appointment["serviceType"] = slot["serviceType"]
        if request.comment:
            appointment["comment"] = request.comment
        return appointment

    # -- cancelling ---------------------------------------------------------------------------

    def cancel(self, server: str, appointment_id: str, reason: str) -> list[str]:
        reply = self.client.send("GET", f"Appointment/{appointment_id}", ok=(200, 404, 410))
        if reply.status != 200 or not isinstance(reply.body, dict):
            return []
        appointment = reply.body
        if appointment.get("status") not in ("cancelled", "entered-in-error"):
            cancelled = {**appointment, "status": "cancelled",
                         "cancelationReason": {"text": reason}}
            self.client.send("PUT", f"Appointment/{appointment_id}", body=cancelled,
                             headers={"If-Match": f'W/"{reply.version}"'}, ok=(200,))
        freed = []
        for slot in appointment.get("slot") or []:
            key = str(slot.get("reference") or "")
            if key.startswith("Slot/") and self._free(key):
                freed.append(key)
        return freed

    def _free(self, key: str) -> bool:
        for _ in range(3):
            reply = self.client.send("GET", key, ok=(200, 404, 410))
            if reply.status != 200 or not isinstance(reply.body, dict):
                return False
            if reply.body.get("status") == "free":
                return True
            put = self.client.send("PUT", key, body={**reply.body, "status": "free"},
                                   headers={"If-Match": f'W/"{reply.version}"'},
                                   ok=(200, *LOST))
            if put.status == 200:
                return True
        return False


def display_of(resource: dict[str, Any]) -> str:
    """A person's or place's name for the patient: HumanName text/given family, or name."""
    names = resource.get("name")
    if isinstance(names, str):
        return names
    if isinstance(names, list) and names:
        name = names[0]
        if name.get("text"):
            return str(name["text"])
        parts = [*name.get("prefix", []), *name.get("given", []), name.get("family", "")]
        return " ".join(str(p) for p in parts if p)
    return ""


def _schedule_facts(schedule: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    actors = []
    clinician = location = ""
    for actor in schedule.get("actor") or []:
        reference = str(actor.get("reference") or "")
        display = str(actor.get("display") or names.get(reference, ""))
        actors.append({"reference": reference, "display": display})
        if reference.startswith(("Practitioner/", "PractitionerRole/")) and not clinician:
            clinician = display
        elif reference.startswith(("Location/", "HealthcareService/")) and not location:
            location = display
    return {"actors": [a for a in actors if a["reference"]], "clinician": clinician,
            "location": location or str(schedule.get("comment") or "")}


def _identifier_query(request: BookingRequest, option: SlotOption) -> str:
    return f"identifier={APPOINTMENT_SYSTEM}|{request.identifier(option)}"


def _issues(reply: Reply) -> str:
    return diagnostics(reply.body)


def _is_conflict(reply: Reply) -> bool:
    """A transaction refused because of a version clash (some servers answer 400 with a
    conflict issue rather than 409/412)."""
    body = reply.body if isinstance(reply.body, dict) else {}
    text = " ".join(str(i.get("diagnostics") or "") + " " + str(i.get("code") or "")
                    for i in body.get("issue") or [] if isinstance(i, dict)).lower()
    return "conflict" in text or "version" in text or "precondition" in text
