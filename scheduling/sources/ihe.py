"""IHE ITI Scheduling (1.0.0): `Appointment/$find` offers proposed appointments, `$hold` (when
declared) reserves one, `$book` books it (and, with status cancelled, cancels it). Used when the
server's CapabilityStatement declares the operations on Appointment. The server holds the race:
an unavailable appointment is an OperationOutcome (`not-found`, or any error) instead of a
booked Appointment, and the patient is shown the next ones."""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime
from typing import Any

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

CANONICAL = "https://profiles.ihe.net/ITI/Scheduling/OperationDefinition/appointment-"
REMEMBERED = 2000


def ihe_operations(capability: dict[str, Any]) -> set[str]:
    """Which of find, hold, book the server declares on Appointment."""
    found = set()
    for rest in capability.get("rest") or []:
        for resource in rest.get("resource") or []:
            if resource.get("type") != "Appointment":
                continue
            for operation in resource.get("operation") or []:
                name = str(operation.get("name") or "").lstrip("$")
                definition = str(operation.get("definition") or "")
                for wanted in ("find", "hold", "book"):
                    if name == wanted or definition == CANONICAL + wanted:
                        found.add(wanted)
    return found


def declares_ihe(capability: dict[str, Any]) -> bool:
    return {"find", "book"} <= ihe_operations(capability)


class IheSource:
    kind = "ihe"

    def __init__(self, destination: Destination, client: FhirClient) -> None:
        self.destination = destination
        self.client = client
        self._seen: OrderedDict[str, SlotOption] = OrderedDict()
        self._lock = threading.Lock()
        self._operations: set[str] | None = None

    def operations(self) -> set[str]:
        if self._operations is None:
            body = self.client.read("metadata").body
            self._operations = ihe_operations(body if isinstance(body, dict) else {})
        return self._operations

    def find(self, after: datetime, until: datetime, limit: int) -> list[SlotOption]:
        params = [("start", instant(after)), ("end", instant(until)), ("_count", str(limit))]
        for actor in self.destination.schedule_actors:
            name = "location-reference" if actor.startswith("Location/") else "practitioner"
            params.append((name, actor))
        if self.destination.specialty_code:
            params.append(("specialty", self.destination.specialty_code))
        if self.destination.service_type:
            params.append(("visit-type", self.destination.service_type))
        bundle = self.client.send("GET", "Appointment/$find", params=params, ok=(200,)).body
        options = []
        for entry in (bundle or {}).get("entry") or []:
            resource = entry.get("resource") or {}
            if resource.get("resourceType") != "Appointment":
                continue
            option = _option(resource, str(entry.get("fullUrl") or ""))
            if option is not None and option.start > after:
                options.append(option)
        options.sort(key=lambda o: o.start)
        with self._lock:
            for option in options:
                self._seen[option.key] = option
                self._seen.move_to_end(option.key)
            while len(self._seen) > REMEMBERED:
                self._seen.popitem(last=False)
        return options[:limit]

    def get(self, key: str) -> SlotOption | None:
        with self._lock:
            found = self._seen.get(key)
        if found is not None:
            return found
        if not key.startswith("Appointment/"):
            return None
        reply = self.client.send("GET", key, ok=(200, 404, 410))
        if reply.status != 200 or not isinstance(reply.body, dict) or \
                reply.body.get("status") != "proposed":
            return None
        return _option(reply.body, key)

    def book(self, option: SlotOption, request: BookingRequest) -> Booked:
        proposed = dict(option.detail.get("appointment") or {})
        if "hold" in self.operations():
            held = self._operation("$hold", [{"name": "appointment-reference",
                                              "valueReference": {"reference": option.key}}])
            proposed = held or proposed
        proposed.update({
            "status": "pending",
            "identifier": [*proposed.get("identifier", []),
                           {"system": APPOINTMENT_SYSTEM,
                            "value": request.identifier(option)}],
            "basedOn": [{"reference": request.service_request}],
            "participant": [*[p for p in proposed.get("participant", [])
                              if not str((p.get("actor") or {}).get("reference", ""))
                              .startswith("Patient/")],
                            {"actor": {"reference": request.patient}, "status": "accepted"}]})
        booked = self._operation("$book", [{"name": "appointment-resource",
                                            "resource": proposed}])
        if booked is None or booked.get("status") != "booked":
            raise SlotTaken(f"{option.key} could not be booked")
        return Booked(self.client.base, booked)

    def cancel(self, server: str, appointment_id: str, reason: str) -> list[str]:
        reply = self.client.send("GET", f"Appointment/{appointment_id}", ok=(200, 404, 410))
        if reply.status != 200 or not isinstance(reply.body, dict):
            return []
        cancelled = {**reply.body, "status": "cancelled", "cancelationReason": {"text": reason}}
        if self._operation("$book", [{"name": "appointment-resource",
                                      "resource": cancelled}]) is None:
            raise PeerError(f"the server refused to cancel Appointment/{appointment_id}")
        return []

    def _operation(self, name: str, parameters: list[dict[str, Any]]
                   ) -> dict[str, Any] | None:
        """The Appointment an operation returned; None when it answered with an
        OperationOutcome (unavailable)."""
        reply = self.client.send("POST", f"Appointment/{name}", body={
            "resourceType": "Parameters", "parameter": parameters},
            ok=(200, 201, 400, 404, 409, 412, 422))
        body = reply.body if isinstance(reply.body, dict) else {}
        if body.get("resourceType") == "Appointment":
            return body
        if body.get("resourceType") == "Bundle":
            for entry in body.get("entry") or []:
                resource = entry.get("resource") or {}
                if resource.get("resourceType") == "Appointment":
                    return dict(resource)
        return None


def _option(appointment: dict[str, Any], full_url: str) -> SlotOption | None:
    start = parse_instant(appointment.get("start"))
    if start is None:
        return None
    key = f"Appointment/{appointment['id']}" if appointment.get("id") else full_url
    location = clinician = ""
    for participant in appointment.get("participant") or []:
        actor = participant.get("actor") or {}
        reference, display = str(actor.get("reference") or ""), str(actor.get("display") or "")
        if reference.startswith(("Practitioner/", "PractitionerRole/")) and not clinician:
            clinician = display
        elif reference.startswith("Location/") and not location:
            location = display
    return SlotOption(key=key, start=start, end=parse_instant(appointment.get("end")),
                      location=location, clinician=clinician,
                      detail={"appointment": appointment})
