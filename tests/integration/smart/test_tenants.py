"""A launch sees only what it may: two EHRs (two strict EHRs, two SMART tenants linked to two
organisations' referral sources) each see their own referrals on every surface, and a URL naming
the other's is refused (403, audited with outcome 4); a launch the EHR limited to one patient sees
that patient's referrals only, whatever the query string says."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from joserfc.jwk import RSAKey
from smart_harness import CLIENT_ID, SCOPES, Harness, Served, smart_settings
from strict_ehr import StrictEhr

from referrals.model import Command, Referral, new_referral_id
from referrals.queries import TaskQuery, search_tasks
from referrals.store.schema import resources
from refloop.app import create_app
from refloop.services import build_services
from refloop.settings import Settings


def _tenant(name: str, ehr: StrictEhr, key_file: Path) -> dict[str, object]:
    return {"name": name, "iss": [ehr.fhir], "client_id": CLIENT_ID, "ehr_origins": [ehr.base],
            "scopes": SCOPES, "private_key_file": str(key_file), "kid": "refloop-1",
            "access_tenant": name}


def _people(ehr: StrictEhr) -> StrictEhr:
    ehr.add({"resourceType": "Practitioner", "id": "coord-1",
             "name": [{"given": ["Casey"], "family": "Coordinator"}]})
    return ehr


@pytest.fixture
def two(database_url: str, tmp_path: Path, ehr: StrictEhr,
        app_key: tuple[Path, RSAKey]) -> Iterator[tuple[Harness, Harness]]:
    """North (the `ehr` fixture) and south, one Refloop serving both organisations."""
    south = _people(StrictEhr().start())
    key_file, key = app_key
    served = Served()
    settings = Settings(
        var_dir=tmp_path / "var", database_url=database_url, public_base_url=served.url,
        sections={"smart": {"tenants": [_tenant("north", ehr, key_file),
                                        _tenant("south", south, key_file)]},
                  "access": {"tenants": [{"name": "north", "sources": [f"fhir|{ehr.fhir}"]},
                                         {"name": "south", "sources": [f"fhir|{south.fhir}"]}]}})
    services = build_services(settings)
    served.app = create_app(services)
    jwks = {"keys": [key.as_dict(private=False) | {"kid": "refloop-1"}]}
    for server in (ehr, south):
        server.register(CLIENT_ID, f"{served.url}/smart/callback", SCOPES, jwks=jwks)
    yield (Harness(ehr, services, served.url, key_file), Harness(south, services, served.url,
                                                                  key_file))
    served.stop()
    services.close()
    south.stop()


def _open(h: Harness, key: str, patient: str = "Patient/p1") -> Referral:
    draft = Referral(id=new_referral_id(), source_key=f"fhir|{h.ehr.fhir}|ServiceRequest/{key}",
                     service_request=f"ServiceRequest/{key}", patient=patient,
                     specialty="cardiology", priority="routine", payer="Acme Health")
    return h.services.referrals.open(draft, Command("detect"))[0]


def _ids(html: str) -> set[str]:
    return set(re.findall(r'/referrals/([0-9a-z-]+)"', html))


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _refusals(h: Harness) -> list[dict]:
    with h.services.db.read() as c:
        events = c.execute(sa.select(resources.c.body).where(
            resources.c.resource_type == "AuditEvent", resources.c.server == "local")).scalars()
        return [e for e in events if e["outcome"] == "4"]


def test_each_tenant_sees_only_its_own_referrals_everywhere(two: tuple[Harness, Harness]):
    north, south = two
    mine = {_open(north, "n1").id, _open(north, "n2").id}
    theirs = _open(south, "s1")
    task = north.services.tasks.open(theirs.id, "call-patient", "call the patient back",
                                     outcomes=["reached"], key="t-s1")
    north.ehr.modes.fhir_context = ["ServiceRequest/s1"]  # another's referral in the context
    browser = north.browser()
    page = north.launch(browser)
    assert page.url.endswith("/") and _ids(page.text) == mine  # landed on its own worklist
    assert "call the patient back" not in page.text  # nor the other's coordinator task
    assert _ids(browser.get(page.url, params={"stage": "all"}).text) == mine
    own = browser.get(f"{page.url}referrals/{min(mine)}")
    assert own.status_code == 200
    other = f"{page.url}referrals/{theirs.id}"
    assert browser.get(other).status_code == 403
    assert browser.get(f"{other}/slots").status_code == 403
    origin = {"Origin": north.url}
    csrf = {"csrf_token": _csrf(own.text)}
    for path, form in ((f"{other}/act", {"action": "accept"}), (f"{other}/book", {"slot": "x"}),
                       (f"{other}/scheduling-link", {}),
                       (f"{page.url}tasks/{task}/outcome", {"outcome": "reached"})):
        refused = browser.post(path, data={**csrf, **form}, headers=origin)
        assert refused.status_code == 403, path
    assert north.services.store.get(theirs.id).stage == theirs.stage
    assert [t.id for t in north.services.tasks.open_for(theirs.id)] == [task]
    refusals = _refusals(north)
    assert len(refusals) == 6 and {"U", "R"} == {e["action"] for e in refusals}
    assert all({"reference": f"Task/{theirs.id}"} in [x.get("what") for x in e["entity"]]
               for e in refusals)
    dash = browser.get(f"{page.url}dashboard").text
    assert "detected: 2 (100%)" in dash
    listed = browser.get(f"{page.url}dashboard/referrals", params={"part": "referrals"}).text
    assert _ids(listed) == mine
    csv = browser.get(f"{page.url}dashboard.csv").text
    south_browser = south.browser()
    south_page = south.launch(south_browser)
    assert _ids(south_page.text) == {theirs.id} and "call the patient back" in south_page.text
    assert "detected: 1 (100%)" in south_browser.get(f"{south_page.url}dashboard").text
    assert south_browser.get(f"{south_page.url}dashboard.csv").text != csv
    assert south_browser.get(f"{south_page.url}referrals/{min(mine)}").status_code == 403


def test_a_launch_limited_to_one_patient_sees_that_patient_only(harness: Harness):
    """No user/ scope granted, patient p1 in context: the whole panel cannot be asked for, and
    another patient's referral can be neither opened nor changed."""
    own = _open(harness, "p1-a")
    other = _open(harness, "p2-a", patient="Patient/p2")
    harness.ehr.modes.drop_scopes = {s for s in SCOPES.split() if s.startswith("user/")}
    browser = harness.browser()
    page = harness.launch(browser, patient="p1")
    assert _ids(page.text) == {own.id} and "Show the whole panel" not in page.text
    assert _ids(browser.get(page.url, params={"panel": "all", "stage": "all"}).text) == {own.id}
    mine = browser.get(f"{page.url}referrals/{own.id}")
    assert mine.status_code == 200
    assert browser.get(f"{page.url}referrals/{other.id}").status_code == 403
    refused = browser.post(f"{page.url}referrals/{other.id}/act",
                           data={"csrf_token": _csrf(mine.text), "action": "accept"},
                           headers={"Origin": harness.url})
    assert refused.status_code == 403
    assert harness.services.store.get(other.id).stage == other.stage
    assert len(_refusals(harness)) == 2


def test_a_granular_user_scope_does_not_lift_the_patient_limit(
        database_url: str, tmp_path: Path, ehr: StrictEhr, app_key: tuple[Path, RSAKey]):
    """`user/ServiceRequest.rs?category=…` lets the user read some orders, under a restriction
    the app does not evaluate: the launch stays limited to its patient."""
    key_file, key = app_key
    scopes = ("launch openid fhirUser patient/*.rs "
              "user/ServiceRequest.rs?category=http://snomed.info/sct|3457005")
    served = Served()
    services = build_services(smart_settings(database_url, tmp_path, ehr, key_file, served.url,
                                             scopes=scopes))
    served.app = create_app(services)
    ehr.register(CLIENT_ID, f"{served.url}/smart/callback", scopes,
                 jwks={"keys": [key.as_dict(private=False) | {"kid": "refloop-1"}]})
    h = Harness(ehr, services, served.url, key_file)
    try:
        own, other = _open(h, "g-p1"), _open(h, "g-p2", patient="Patient/p2")
        browser = h.browser()
        page = h.launch(browser, patient="p1")
        assert "Show the whole panel" not in page.text
        assert _ids(browser.get(page.url, params={"panel": "all", "stage": "all"}).text) == {
            own.id}
        assert browser.get(f"{page.url}referrals/{other.id}").status_code == 403
        assert browser.get(f"{page.url}dashboard").status_code == 403
    finally:
        served.stop()
        services.close()


def test_the_server_warns_at_start_up_when_one_of_several_tenants_has_no_limit(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    tenants = [{"name": name, "iss": f"https://{name}.example/fhir", "client_id": name,
                "client_secret": "s", "ehr_origins": [f"https://{name}.example"], **extra}
               for name, extra in (("north", {"access_tenant": "north"}), ("south", {}))]
    settings = Settings(
        var_dir=tmp_path / "var", database_url=f"sqlite:///{tmp_path / 'refloop.db'}",
        sections={"smart": {"tenants": tenants},
                  "access": {"tenants": [{"name": "north", "sources": ["hl7|NORTH"]}]}})
    services = build_services(settings)
    try:
        create_app(services)
    finally:
        services.close()
    assert any("south has no access_tenant" in r.getMessage() and r.levelname == "WARNING"
               and r.name == "refloop.smart" for r in caplog.records)


def test_a_source_differing_only_in_case_is_another_organisation(two: tuple[Harness, Harness]):
    """SQLite's LIKE ignores ASCII case: `fhir|HTTP://…/FHIR|…` (or `hl7|NORTH` against
    `hl7|north`) must not be listed, counted or searched as north's `fhir|http://…/fhir`."""
    north, _ = two
    mine = _open(north, "n1")
    draft = Referral(id=new_referral_id(), source_key=f"fhir|{north.ehr.fhir.upper()}|SR/x",
                     service_request="ServiceRequest/x", patient="Patient/p1",
                     specialty="cardiology")
    north.services.referrals.open(draft, Command("detect"))
    browser = north.browser()
    page = north.launch(browser)
    assert _ids(browser.get(page.url, params={"stage": "all"}).text) == {mine.id}
    assert "detected: 1 (100%)" in browser.get(f"{page.url}dashboard").text
    listed = browser.get(f"{page.url}dashboard/referrals", params={"part": "referrals"}).text
    assert _ids(listed) == {mine.id}
    found, total = search_tasks(north.services.db,
                                TaskQuery(within_sources=(f"fhir|{north.ehr.fhir}",)))
    assert [t["id"] for t in found] == [mine.id] and total == 1


def test_an_organisation_whose_sources_match_no_referral_is_told_so(
        two: tuple[Harness, Harness], caplog: pytest.LogCaptureFixture):
    """North's sources match no referral (only south has some): its worklist and dashboard say
    so and name the setting; the server warns at start-up; south's pages have no notice."""
    north, south = two
    _open(south, "s1")
    create_app(north.services)  # as a restarted server would
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
              and r.name == "refloop.access"]
    assert len(warned) == 1 and "[[access.tenants]] north" in warned[0], warned
    browser = north.browser()
    page = north.launch(browser)
    assert _ids(page.text) == set()
    for html in (page.text, browser.get(f"{page.url}dashboard").text):
        assert "No referral matches this organisation's configured referral sources" in html
        assert "<code>[[access.tenants]]</code> entry <code>north</code>" in html
        assert f"<code>fhir|{north.ehr.fhir}</code>" in html
    south_browser = south.browser()
    south_page = south.launch(south_browser)
    assert "configured referral sources" not in south_page.text
    assert "configured referral sources" not in south_browser.get(
        f"{south_page.url}dashboard").text
    _open(north, "n1")
    assert "configured referral sources" not in browser.get(page.url).text
