"""A period's report: CMS50-shaped loop closure (patient-based, first referral per patient,
October 31 for a year), `refloop report --period ... [--json|--csv|--fhir]`, and
`GET /fhir/MeasureReport` behind the access guard (tokens from the real token endpoint)."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.measurereport import MeasureReport

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "analytics"))

from histories import COORDINATOR, T0, D, H, History, october, replay

from analytics.report import loop_closure, parse_period
from referrals import closed_loop as loop
from refloop.app import create_app
from refloop.cli import main
from refloop.services import Services


@pytest.fixture(autouse=True)
def keep_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def second_referral_of_a(at: datetime) -> History:
    """Patient A again, later in October: not the first referral, so CMS50 ignores it."""
    h = History.detected("a2", at, patient="Patient/a", specialty="dermatology")
    h.step("accept", at + H, actor=COORDINATOR)
    return h


def load(services: Services) -> list[History]:
    histories = [*october(), second_referral_of_a(T0 + 20 * D)]
    for h in histories:
        replay(services.referrals, h)
    return histories


def test_loop_closure_counts_patients_by_their_first_referral() -> None:
    facts = [h.facts() for h in [*october(), second_referral_of_a(T0 + 20 * D)]]
    october_2026 = parse_period("2026-10")
    # patients a, c, d, f, g (b withdrew); reports received within October: a (10-18), d (10-13)
    assert loop_closure(facts, october_2026) == type(loop_closure(facts, october_2026))(5, 5, 2)
    # November alone has no referral
    assert loop_closure(facts, parse_period("2026-11")).denominator == 0
    # the year: referrals up to October 31 count, and reports up to December 31
    late = History.detected("z", datetime(2026, 11, 2, tzinfo=UTC))
    closed_late = History.detected("y", datetime(2026, 10, 30, tzinfo=UTC))
    closed_late.step("accept", datetime(2026, 10, 30, 1, tzinfo=UTC), actor=COORDINATOR)
    closed_late.step(loop.RECORD_RECEIPT, datetime(2026, 12, 20, tzinfo=UTC))
    year = loop_closure([*facts, late.facts(), closed_late.facts()], parse_period("2026"))
    assert (year.denominator, year.numerator) == (6, 3)  # z is after October 31


def test_refloop_report_prints_table_json_csv_and_fhir(services: Services,
                                                       tmp_path: Path) -> None:
    load(services)
    env = {"REFLOOP_CONFIG": "", "REFLOOP_DATABASE_URL": services.settings.database,
           "REFLOOP_VAR_DIR": str(tmp_path / "var"), "REFLOOP_LOG_LEVEL": "WARNING"}
    runner = CliRunner()
    table = runner.invoke(main, ["report", "--period", "2026-10"], env=env)
    assert table.exit_code == 0, table.output
    assert "completion (visit completed)" in table.output and "60.0%" in table.output
    assert "loop closure, CMS50 shape (patients)" in table.output and "2/5" in table.output
    plain = runner.invoke(main, ["report", "--period", "2026-10", "--json"], env=env)
    assert plain.exit_code == 0, plain.output
    data = json.loads(plain.output)
    overall = data["overall"]
    # the six October referrals of the definitions' tests, and a2 (accepted, still open)
    assert (overall["referrals"], overall["withdrawn"], overall["denominator"]) == (7, 1, 6)
    assert (overall["visited"], overall["receipts"], overall["no_shows"]) == (3, 2, 2)
    assert overall["completion_rate"] == pytest.approx(3 / 6)
    assert overall["durations_hours"]["visit"]["median"] == 240.0
    assert data["loop_closure_cms50"] == {"initial_population": 5, "denominator": 5,
                                          "numerator": 2, "score": 0.4}
    specialties = {row["value"]: row["referrals"] for row in data["by"]["specialty"]}
    assert specialties == {"cardiology": 6, "dermatology": 1}
    table_csv = runner.invoke(main, ["report", "--period", "2026-10", "--csv"], env=env)
    assert table_csv.exit_code == 0, table_csv.output
    rows = list(csv.DictReader(io.StringIO(table_csv.output)))
    assert (rows[0]["dimension"], rows[0]["referrals"], rows[0]["completion_rate"]) == (
        "all", "7", "0.5000")
    assert {(r["dimension"], r["value"]) for r in rows} >= {("specialty", "cardiology"),
                                                           ("referrer", "Practitioner/gp-1")}
    fhir = runner.invoke(main, ["report", "--period", "2026-10", "--fhir"], env=env)
    assert fhir.exit_code == 0, fhir.output
    resource = json.loads(fhir.output)
    MeasureReport.model_validate(resource)
    assert resource["status"] == "complete" and resource["type"] == "summary"
    bad = runner.invoke(main, ["report", "--period", "Oct 2026"], env=env)
    assert bad.exit_code == 2 and "a month (2026-11) or a year (2026)" in bad.output


def groups(resource: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for group in resource["group"]:
        counts = {p["code"]["coding"][0]["code"]: p["count"] for p in group["population"]}
        found[group["id"]] = {**counts, "score": group.get("measureScore", {}).get("value")}
    return found


def test_measure_report_behind_the_guard(services: Services, fhir_auth: Any) -> None:
    load(services)
    client = create_app(services).test_client()
    assert client.get("/fhir/MeasureReport?period=2026-10").status_code == 401
    wrong = fhir_auth.headers(client, services, "system/Task.rs")
    assert client.get("/fhir/MeasureReport?period=2026-10", headers=wrong).status_code == 403
    headers = fhir_auth.headers(client, services, "system/MeasureReport.rs")
    answer = client.get("/fhir/MeasureReport?period=2026-10,2026", headers=headers)
    assert answer.status_code == 200, answer.get_json()
    assert answer.mimetype == "application/fhir+json"
    assert answer.headers["Cache-Control"] == "no-store"
    bundle = answer.get_json()
    Bundle.model_validate(bundle)
    assert bundle["total"] == 2
    month = bundle["entry"][0]["resource"]
    MeasureReport.model_validate(month)
    assert month["id"] == "refloop-outcomes-2026-10"
    assert month["period"] == {"start": "2026-10-01", "end": "2026-10-31"}
    assert month["measure"] == "http://refloop.org/fhir/Measure/referral-outcomes|1.0.0"
    found = groups(month)
    assert found["loop-closure"] == {"initial-population": 5, "denominator": 5, "numerator": 2,
                                     "score": 0.4}
    assert found["completion"] == {"initial-population": 7, "denominator": 7,
                                   "denominator-exclusion": 1, "numerator": 3, "score": 0.5}
    assert found["no-show"]["score"] == 0.4
    assert found["visit-median"]["score"] == 10.0  # days
    # read by id, and the CapabilityStatement lists it
    read = client.get("/fhir/MeasureReport/refloop-outcomes-2026-10", headers=headers)
    assert read.status_code == 200 and read.get_json()["group"] == month["group"]
    assert client.get("/fhir/MeasureReport/other", headers=headers).status_code == 404
    bad = client.get("/fhir/MeasureReport?period=ge2026-01", headers=headers)
    assert bad.status_code == 400 and bad.get_json()["resourceType"] == "OperationOutcome"
    statement = client.get("/fhir/metadata").get_json()
    [measure] = [r for r in statement["rest"][0]["resource"] if r["type"] == "MeasureReport"]
    assert {i["code"] for i in measure["interaction"]} == {"read", "search-type"}
    assert [p["name"] for p in measure["searchParam"]] == ["period"]
