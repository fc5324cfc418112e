"""The worklist shows each row's patient by name (and age and sex), read from the Patient
resources we store for the referral's origin (EHR base, demo, hl7:<sender>), in one query for
the page; a patient we hold no resource for shows its reference. The view's AuditEvent names
every patient on the page. Real SQLite and PostgreSQL; the EHR is the strict test EHR."""

from __future__ import annotations

import html
from datetime import UTC, date, datetime

import sqlalchemy as sa
from smart_harness import Harness

from referrals.model import Command, Referral, new_referral_id
from referrals.store.schema import resources
from referrals.worklist import WorklistFilter, fetch_page, fetch_patients
from smart_app.patient_label import age_on


def _open(h: Harness, source_key: str, patient: str, key: str) -> Referral:
    draft = Referral(id=new_referral_id(), source_key=source_key,
                     service_request=f"ServiceRequest/{key}", patient=patient,
                     specialty="cardiology", priority="routine")
    referral, _ = h.services.referrals.open(draft, Command("detect"))
    return referral


def _patient(pid: str, given: str, family: str, birth: str, gender: str) -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": birth,
            "name": [{"use": "official", "given": [given], "family": family}]}


def _seed(h: Harness) -> dict[str, Referral]:
    put = h.services.resources.put
    base = h.ehr.fhir
    put(_patient("e1", "Grace", "Hopper", "1960-03-09", "female"), server=base)
    put(_patient("d1", "Alan", "Turing", "1980-06-23", "male"), server="demo")
    put(_patient("h1", "Katherine", "Johnson", "1990-08-26", "female"), server="hl7:LABSYS")
    # the same id at another origin must not be shown for the hl7 referral below
    put(_patient("h2", "Wrong", "Origin", "1950-01-01", "male"), server="demo")
    return {
        "fhir": _open(h, f"fhir|{base}|ServiceRequest/sr-e1", "Patient/e1", "sr-e1"),
        "demo": _open(h, "demo|ServiceRequest/sr-d1", "Patient/d1", "sr-d1"),
        "hl7": _open(h, "hl7|LABSYS|ORD-1", "Patient/h1", "sr-h1"),
        "unknown": _open(h, "hl7|LABSYS|ORD-2", "Patient/h2", "sr-h2"),
    }


def _audits(h: Harness) -> list[dict]:
    with h.services.db.read() as c:
        return list(c.execute(sa.select(resources.c.body).where(
            resources.c.resource_type == "AuditEvent", resources.c.server == "local")).scalars())


def test_rows_show_names_age_and_sex_or_the_reference(harness: Harness):
    made = _seed(harness)
    browser = harness.browser()
    page = harness.launch(browser)
    assert page.status_code == 200
    text = html.unescape(page.text)
    today = datetime.now(UTC).date()
    assert "Grace Hopper" in text and f"{age_on('1960-03-09', today)} y · F" in text
    assert "Alan Turing" in text and f"{age_on('1980-06-23', today)} y · M" in text
    assert "Katherine Johnson" in text
    assert "Wrong Origin" not in text            # same id, other origin
    assert "Patient/h2" in text                  # unknown: the reference
    # a known patient is named; the reference is only in the name's tooltip
    assert ">Patient/e1<" not in text and ">Patient/d1<" not in text
    assert 'title="Patient/e1">Grace Hopper<' in text
    assert len(made) == 4


def test_the_worklist_view_audits_every_patient_on_the_page(harness: Harness):
    made = _seed(harness)
    browser = harness.browser()
    harness.launch(browser)
    searches = [e for e in _audits(harness) if e["subtype"][0]["code"] == "search"]
    assert searches
    shown = {e["what"]["reference"] for e in searches[-1]["entity"]
             if e.get("role", {}).get("code") == "1"}
    assert shown == {r.patient for r in made.values()}
    assert "Grace" not in str(searches[-1])      # references, never names


def test_names_for_a_page_take_one_query(harness: Harness):
    base = harness.ehr.fhir
    for i in range(50):
        origin = (f"fhir|{base}|ServiceRequest/q{i}", base) if i % 3 == 0 else \
            (f"demo|ServiceRequest/q{i}", "demo") if i % 3 == 1 else \
            (f"hl7|S{i % 2}|ORD-{i}", f"hl7:S{i % 2}")
        if i % 10:
            harness.services.resources.put(_patient(f"q{i}", f"Given{i}", "Family", "2000",
                                                    "other"), server=origin[1])
        _open(harness, origin[0], f"Patient/q{i}", f"q{i}")
    rows = fetch_page(harness.services.db, WorklistFilter(), limit=50).rows
    assert len(rows) == 50
    statements: list[str] = []
    engine = harness.services.db.engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        found = fetch_patients(harness.services.db, rows)
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1
    assert len(found) == 45                      # every tenth patient is not stored
    by_id = {r.id: r for r in rows}
    for referral_id, body in found.items():
        assert f"Patient/{body['id']}" == by_id[referral_id].patient
    assert age_on("2000", date(2026, 1, 1)) == 26


def test_program_clocks_show_beside_the_deadline(harness: Harness):
    """A running TEAM clock caps the row's deadline and is named beside it; a met one says
    so; the referral page lists it too."""
    from datetime import timedelta

    made = _seed(harness)
    now = datetime.now(UTC)
    harness.services.referrals.act(made["fhir"].id, Command("start-clock", changes={"clock": {
        "program": "team", "goal": "visit", "started_at": now - timedelta(days=25),
        "due_at": now + timedelta(days=5, hours=1)}}))
    harness.services.referrals.act(made["demo"].id, Command("start-clock", changes={"clock": {
        "program": "asm", "goal": "report", "started_at": now, "due_at": now}}))
    harness.services.referrals.act(made["demo"].id, Command("meet-clock", changes={"clock": {
        "program": "asm", "at": now}}))
    browser = harness.browser()
    page = harness.launch(browser)
    text = html.unescape(page.text)
    assert "TEAM visit due in 5 d" in text and "ASM report met" in text
    row = next(r for r in fetch_page(harness.services.db, WorklistFilter(), limit=50).rows
               if r.id == made["fhir"].id)
    assert row.deadline is not None and row.deadline <= now + timedelta(days=5, hours=1)
