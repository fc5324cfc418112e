"""A FAKE IHE ITI Scheduling server, for tests only: no IHE Scheduling server runs here (neither
sekmet-fhir nor the HAPI JPA server implements $find/$hold/$book, and none is published on the
registries we reach), so this small in-memory Flask app plays one. It declares the operations in
its CapabilityStatement, offers proposed Appointments from a list of times, holds one for the
first caller only (the second gets an OperationOutcome `not-found`), books a held one, and
cancels with `$book` status cancelled. One lock serialises everything, as a real server's
transaction would."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, jsonify, request

CANONICAL = "https://profiles.ihe.net/ITI/Scheduling/OperationDefinition/appointment-"


def ihe_app(starts: list[datetime], practitioner: str = "Practitioner/ihe-doc") -> Flask:
    app = Flask("fake-ihe")
    lock = threading.Lock()
    proposals = {f"p{n}": start for n, start in enumerate(starts)}
    held: set[str] = set()
    booked: dict[str, dict[str, Any]] = {}
    app.extensions["booked"] = booked

    def proposed(pid: str) -> dict[str, Any]:
        start = proposals[pid]
        return {"resourceType": "Appointment", "id": pid, "status": "proposed",
                "start": start.isoformat(), "end": (start + timedelta(minutes=30)).isoformat(),
                "participant": [
                    {"actor": {"reference": practitioner, "display": "Dr Ana Ruiz"},
                     "status": "accepted"},
                    {"actor": {"reference": "Location/ihe-clinic",
                               "display": "IHE Clinic, 5 Oak Road"}, "status": "accepted"}]}

    def outcome(code: str, status: int) -> Any:
        return jsonify({"resourceType": "OperationOutcome", "issue": [
            {"severity": "fatal", "code": code}]}), status

    @app.get("/fhir/metadata")
    def metadata() -> Any:
        return jsonify({"resourceType": "CapabilityStatement", "status": "active",
                        "fhirVersion": "4.0.1", "rest": [{"mode": "server", "resource": [
                            {"type": "Appointment", "operation": [
                                {"name": op, "definition": CANONICAL + op}
                                for op in ("find", "hold", "book")]}]}]})

    @app.get("/fhir/Appointment/$find")
    def find() -> Any:
        start = datetime.fromisoformat(request.args["start"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(request.args["end"].replace("Z", "+00:00"))
        count = int(request.args.get("_count", "20"))
        with lock:
            free = [pid for pid, at in sorted(proposals.items(), key=lambda kv: kv[1])
                    if start <= at < end and pid not in held]
        entries = [{"fullUrl": f"{request.host_url}fhir/Appointment/{pid}",
                    "resource": proposed(pid)} for pid in free[:count]]
        return jsonify({"resourceType": "Bundle", "type": "searchset", "total": len(free),
                        "entry": entries})

    @app.post("/fhir/Appointment/$hold")
    def hold() -> Any:
        reference = request.json["parameter"][0]["valueReference"]["reference"]
        pid = reference.rsplit("/", 1)[-1]
        with lock:
            if pid not in proposals or pid in held:
                return outcome("not-found", 409)
            held.add(pid)
        return jsonify({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {**proposed(pid), "status": "pending"}}]})

    @app.post("/fhir/Appointment/$book")
    def book() -> Any:
        resource = request.json["parameter"][0]["resource"]
        with lock:
            if resource.get("status") == "cancelled":
                found = booked.get(resource["id"])
                if found is None:
                    return outcome("not-found", 404)
                found["status"] = "cancelled"
                held.discard(found["_proposal"])
                return jsonify({k: v for k, v in found.items() if not k.startswith("_")})
            pid = resource.get("id", "")
            if pid not in held or any(b["_proposal"] == pid and b["status"] == "booked"
                                      for b in booked.values()):
                return outcome("not-found", 409)
            new_id = uuid.uuid4().hex[:12]
            booked[new_id] = {**resource, "id": new_id, "status": "booked",
                              "meta": {"versionId": "1"}, "_proposal": pid}
            return jsonify({k: v for k, v in booked[new_id].items() if not k.startswith("_")})

    @app.get("/fhir/Appointment/<aid>")
    def read(aid: str) -> Any:
        with lock:
            found = booked.get(aid)
        if found is None:
            return outcome("not-found", 404)
        return jsonify({k: v for k, v in found.items() if not k.startswith("_")})

    return app
