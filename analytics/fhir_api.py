"""`GET /fhir/MeasureReport` (search by `period`) and `GET /fhir/MeasureReport/{id}`: a period's
report as a FHIR MeasureReport, computed when asked from the rollup's facts.

The guard and the CapabilityStatement marker are handed in by refloop/wiring (this adapter
imports neither): `access.fhir(type, interaction)` lets the view run only for a token with a
MeasureReport scope and gives it `reach` (a tenant's token sees its own referrals' figures; a
patient's token none), `declare(type, interaction, params)` lists the route in /fhir/metadata.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from flask import Blueprint, Response, request

from analytics.measure_report import build_measure_report, period_of_id, report_id
from analytics.report import Period, PeriodError, parse_period, period_report
from referrals.store.database import Database

FHIR_JSON = "application/fhir+json"
SEARCH_PARAMS = {"period": ("date", "The month (2026-11) or year (2026) reported; several "
                            "values, comma-separated or repeated, give one report each; "
                            "default: this month and the one before")}
MAX_REPORTS = 24
_VALUE = re.compile(r"^(?:eq)?(\d{4}(?:-\d{2})?)$")


def measure_report_blueprint(db: Database, *, access: Any, declare: Callable[..., Any],
                             base_url: str, refresh: Callable[[], object] = lambda: None,
                             clock: Callable[[], datetime] | None = None) -> Blueprint:
    """`refresh()` runs before a report is computed (the wiring reads the newest events into
    the rollup, so a report is current to the moment it is asked for)."""
    bp = Blueprint("fhir_measure_report", __name__, url_prefix="/fhir")
    fhir_base = base_url.rstrip("/") + "/fhir"
    now = clock or (lambda: datetime.now(UTC))

    @bp.after_request
    def _no_store(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        return response

    @bp.get("/MeasureReport")
    @declare("MeasureReport", "search-type", SEARCH_PARAMS)
    @access.fhir("MeasureReport", "search-type")
    def search(grant: Any, reach: Any) -> Response:
        if reach.patient:
            return _refused_patient()
        try:
            periods = _periods(request.args.getlist("period"), now())
        except PeriodError as exc:
            return _outcome(str(exc), "invalid", 400)
        refresh()
        reports = [build_measure_report(period_report(db, p, sources=reach.sources, now=now()))
                   for p in periods]
        return _fhir({"resourceType": "Bundle", "type": "searchset", "total": len(reports),
                      "link": [{"relation": "self", "url": f"{fhir_base}/MeasureReport?"
                                f"{request.query_string.decode('latin-1')}".rstrip("?")}],
                      "entry": [{"fullUrl": f"{fhir_base}/MeasureReport/{r['id']}",
                                 "resource": r, "search": {"mode": "match"}}
                                for r in reports]})

    @bp.get("/MeasureReport/<report>")
    @declare("MeasureReport", "read")
    @access.fhir("MeasureReport", "read")
    def read(report: str, grant: Any, reach: Any) -> Response:
        if reach.patient:
            return _refused_patient()
        period = period_of_id(report)
        if period is None:
            return _outcome(f"MeasureReport/{report[:64]} is not known; ids are "
                            f"{report_id(parse_period('2026-11'))} (a month) or "
                            f"{report_id(parse_period('2026'))} (a year)", "not-found", 404)
        refresh()
        return _fhir(build_measure_report(period_report(db, period, sources=reach.sources,
                                                        now=now())))

    return bp


def _periods(values: list[str], now: datetime) -> list[Period]:
    if not values:
        this = date(now.year, now.month, 1)
        previous = date(this.year - (this.month == 1), (this.month - 2) % 12 + 1, 1)
        return [parse_period(f"{d.year}-{d.month:02d}") for d in (previous, this)]
    found = []
    for value in (v.strip() for raw in values for v in raw.split(",")):
        match = _VALUE.match(value)
        if match is None:
            raise PeriodError(f"period={value!r}: give a month (2026-11) or a year (2026), "
                              "optionally prefixed eq; ranges are not supported")
        found.append(parse_period(match.group(1)))
    if len(found) > MAX_REPORTS:
        raise PeriodError(f"at most {MAX_REPORTS} periods per search")
    return list(dict.fromkeys(found))


def _refused_patient() -> Response:
    return _outcome("a MeasureReport sums many patients' referrals: a token limited to one "
                    "patient cannot read it", "forbidden", 403)


def _outcome(text: str, code: str, status: int) -> Response:
    return _fhir({"resourceType": "OperationOutcome",
                  "issue": [{"severity": "error", "code": code, "diagnostics": text}]}, status)


def _fhir(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype=FHIR_JSON)
