"""The FHIR facade: `/fhir/metadata` and the read-only Task API over the referral store."""

from __future__ import annotations

import json
import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, request

from capability.outcome import FHIR_JSON, operation_outcome
from capability.search import TASK_SEARCH_PARAMS, parse_task_query
from capability.statement import build_capability_statement, interaction
from referrals.errors import InboundError
from referrals.queries import search_tasks
from referrals.store.database import Database
from referrals.store.referrals import ReferralStore

#: a FHIR logical id; anything else cannot be a Task of ours (not looked up)
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def fhir_response(body: dict[str, Any], status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, mimetype=FHIR_JSON, headers=headers)


def facade_blueprint(store: ReferralStore, db: Database) -> Blueprint:
    fhir = Blueprint("fhir", __name__, url_prefix="/fhir")

    @fhir.errorhandler(InboundError)
    def _bad_input(exc: InboundError) -> Response:
        return fhir_response(operation_outcome(str(exc), code=exc.code,
                                               expression=exc.expression), exc.status)

    @fhir.get("/metadata")
    @interaction("", "capabilities")
    def metadata() -> Response:
        views = current_app.view_functions.values()
        return fhir_response(build_capability_statement(
            views, base_url=request.url_root.rstrip("/") + "/fhir",
            software_version=_software_version()))

    @fhir.get("/Task/<task_id>")
    @interaction("Task", "read")
    def read_task(task_id: str) -> Response:
        task = store.task(task_id) if _ID.fullmatch(task_id) else None
        if task is None:
            return fhir_response(operation_outcome(f"Task/{task_id[:64]} is not known",
                                                   code="not-found"), 404)
        headers = {"ETag": f'W/"{task["meta"]["versionId"]}"',
                   "Last-Modified": task["meta"]["lastUpdated"]}
        return fhir_response(task, headers=headers)

    @fhir.get("/Task")
    @interaction("Task", "search-type", TASK_SEARCH_PARAMS)
    def search_task() -> Response:
        query = parse_task_query(list(request.args.items(multi=True)))
        tasks, total = search_tasks(db, query)
        return fhir_response(_searchset(tasks, total, query.count, query.offset))

    @fhir.route("/<path:anything>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def unknown(anything: str) -> Response:
        return fhir_response(operation_outcome(
            f"{request.method} /fhir/{anything} is not supported; see /fhir/metadata",
            code="not-supported"), 404)

    return fhir


def _searchset(tasks: list[dict[str, Any]], total: int, count: int, offset: int
               ) -> dict[str, Any]:
    base = request.base_url
    params = [(k, v) for k, v in request.args.items(multi=True) if k not in ("_offset",)]

    def page(at: int) -> str:
        return f"{base}?{urlencode([*params, ('_offset', str(at))])}"

    links = [{"relation": "self", "url": page(offset)}]
    if count and offset + count < total:
        links.append({"relation": "next", "url": page(offset + count)})
    if offset > 0:
        links.append({"relation": "previous", "url": page(max(0, offset - max(count, 1)))})
    if count:
        links.append({"relation": "first", "url": page(0)})
        links.append({"relation": "last",
                      "url": page(max(0, (total - 1) // count * count) if total else 0)})
    root = request.url_root.rstrip("/")
    return {
        "resourceType": "Bundle", "type": "searchset", "total": total, "link": links,
        "entry": [{"fullUrl": f"{root}/fhir/Task/{task['id']}", "resource": task,
                   "search": {"mode": "match"}} for task in tasks],
    }


def _software_version() -> str:
    try:
        return version("refloop")
    except PackageNotFoundError:
        return "dev"
