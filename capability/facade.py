"""The FHIR facade: `/fhir/metadata` and the read-only Task API over the referral store.

Every interaction except the CapabilityStatement goes through the access guard handed in by the
wiring (a bearer token with a SMART scope for it); each read or search of patient data writes
an AuditEvent, and every response but the CapabilityStatement says `Cache-Control: no-store`.
Absolute URLs come from the configured base URL, never from the request's Host header.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, request

from capability import audit
from capability.outcome import FHIR_JSON, operation_outcome
from capability.search import TASK_SEARCH_PARAMS, parse_task_query
from capability.statement import build_capability_statement, interaction
from referrals.errors import InboundError
from referrals.queries import read_task, search_tasks
from referrals.store.database import Database
from referrals.store.resources import ResourceStore

View = Callable[..., Any]


class Access(Protocol):
    """The guard: `fhir(type, interaction)` decorates a view, which then gets `grant` (who) and
    `reach` (the compartment: `sources`, `patient`); `require()` asks for any valid token."""

    def fhir(self, resource_type: str, interaction: str) -> Callable[[View], View]: ...

    def require(self, *scopes: str) -> Callable[[View], View]: ...

#: a FHIR logical id; anything else cannot be a Task of ours (not looked up)
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def fhir_response(body: dict[str, Any], status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, mimetype=FHIR_JSON, headers=headers)


def facade_blueprint(db: Database, resources: ResourceStore, *, access: Access, base_url: str,
                     security: dict[str, Any]) -> Blueprint:
    fhir = Blueprint("fhir", __name__, url_prefix="/fhir")
    fhir_base = base_url.rstrip("/") + "/fhir"
    audit_log = audit.AuditLog(resources)

    @fhir.errorhandler(InboundError)
    def _bad_input(exc: InboundError) -> Response:
        return fhir_response(operation_outcome(str(exc), code=exc.code,
                                               expression=exc.expression), exc.status)

    @fhir.after_request
    def _no_store(response: Response) -> Response:
        if request.endpoint != "fhir.metadata":
            response.headers["Cache-Control"] = "no-store"
        return response

    @fhir.get("/metadata")
    @interaction("", "capabilities")
    def metadata() -> Response:
        views = current_app.view_functions.values()
        return fhir_response(build_capability_statement(
            views, base_url=fhir_base, software_version=_software_version(),
            security=security))

    @fhir.get("/Task/<task_id>")
    @interaction("Task", "read")
    @access.fhir("Task", "read")
    def read(task_id: str, grant: Any, reach: Any) -> Response:
        row = read_task(db, task_id) if _ID.fullmatch(task_id) else None
        if row is None:
            return fhir_response(operation_outcome(f"Task/{task_id[:64]} is not known",
                                                   code="not-found"), 404)
        if not row.within(reach.patient, reach.sources):
            audit_log.record(audit.build_audit_event(
                grant, interaction="read", patients=[row.patient], entities=[f"Task/{task_id}"],
                outcome=audit.REFUSED))
            return fhir_response(operation_outcome(
                f"Task/{task_id} is outside what this token may read "
                f"({_compartment(reach)})", code="forbidden"), 403)
        audit_log.record(audit.build_audit_event(
            grant, interaction="read", patients=[row.patient], entities=[f"Task/{task_id}"]))
        task = row.task
        return fhir_response(task, headers={"ETag": f'W/"{task["meta"]["versionId"]}"',
                                            "Last-Modified": task["meta"]["lastUpdated"]})

    @fhir.get("/Task")
    @interaction("Task", "search-type", TASK_SEARCH_PARAMS)
    @access.fhir("Task", "search-type")
    def search(grant: Any, reach: Any) -> Response:
        query = parse_task_query(list(request.args.items(multi=True)))
        query.within_patient, query.within_sources = reach.patient, reach.sources
        tasks, total = search_tasks(db, query)
        audit_log.record(audit.build_audit_event(
            grant, interaction="search-type",
            patients=[str((t.get("for") or {}).get("reference", "")) for t in tasks],
            entities=[f"Task/{t['id']}" for t in tasks],
            query=f"Task?{request.query_string.decode('latin-1')}"))
        return fhir_response(_searchset(fhir_base, tasks, total, query.count, query.offset))

    @fhir.route("/<path:anything>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    @access.require()
    def unknown(anything: str) -> Response:
        return fhir_response(operation_outcome(
            f"{request.method} /fhir/{anything} is not supported; see /fhir/metadata",
            code="not-supported"), 404)

    return fhir


def _compartment(reach: Any) -> str:
    if reach.patient:
        return f"patient {reach.patient} only"
    return "its tenant's referrals only"


def _searchset(fhir_base: str, tasks: list[dict[str, Any]], total: int, count: int,
               offset: int) -> dict[str, Any]:
    params = [(k, v) for k, v in request.args.items(multi=True) if k not in ("_offset",)]

    def page(at: int) -> str:
        return f"{fhir_base}/Task?{urlencode([*params, ('_offset', str(at))])}"

    links = [{"relation": "self", "url": page(offset)}]
    if count and offset + count < total:
        links.append({"relation": "next", "url": page(offset + count)})
    if offset > 0:
        links.append({"relation": "previous", "url": page(max(0, offset - max(count, 1)))})
    if count:
        links.append({"relation": "first", "url": page(0)})
        links.append({"relation": "last",
                      "url": page(max(0, (total - 1) // count * count) if total else 0)})
    return {
        "resourceType": "Bundle", "type": "searchset", "total": total, "link": links,
        "entry": [{"fullUrl": f"{fhir_base}/Task/{task['id']}", "resource": task,
                   "search": {"mode": "match"}} for task in tasks],
    }


def _software_version() -> str:
    try:
        return version("refloop")
    except PackageNotFoundError:
        return "dev"
