"""The outcomes dashboard through the launched SMART app (strict EHR, real database): the
figures of the definitions' October cohort, each number opening its referrals (audited), the CSV,
a filter the page cannot read. The page's look is checked in tests/browser/."""

from __future__ import annotations

import csv
import html
import io
import re
import sys
from pathlib import Path

import sqlalchemy as sa
from smart_harness import SCOPES, Harness

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "analytics"))

from histories import october, replay

from referrals.store.schema import resources

OCTOBER = {"since": "2026-10-01", "until": "2026-10-31"}


def links(page: str) -> dict[str, str]:
    """Headline label -> its link (query string of the referrals page)."""
    found = {}
    for href, label in re.findall(
            r'<a href="[^"]*/dashboard/referrals\?([^"]+)"><span class="what">([^<]+)</span>',
            page):
        found[label] = html.unescape(href)
    return found


def test_the_dashboard_shows_the_cohort_and_opens_the_referrals_behind(harness: Harness):
    ids = {h.referral.id: replay(harness.services.referrals, h) for h in october()}
    browser = harness.browser()
    page = harness.launch(browser)
    # no Practitioner stored yet: the referrer shows as its reference
    unnamed = browser.get(f"{page.url}dashboard", params=OCTOBER).text
    assert 'data-label="Referrer">Practitioner/gp-1</th>' in unnamed
    harness.services.resources.put({"resourceType": "Practitioner", "id": "gp-1",
                                    "name": [{"given": ["Grace"], "family": "Okafor"}]},
                                   server="https://ehr.example.org/fhir")
    dash = browser.get(f"{page.url}dashboard", params=OCTOBER)
    assert dash.status_code == 200
    text = dash.text
    # 6 referrals, 1 withdrawn: completion 3/5, scheduling 3/5, loop closure 2/5, no-shows 2/5
    assert "3 visits of 5" in text and "2 reports received" in text
    assert "2 of 5 appointments" in text and "1 withdrawn by the referrer" in text
    assert "detected: 6 (100%)" in text and "report received: 2 (33%)" in text
    assert "2026-10" in text and "60% (3/5) · loop 40% · 2 open" in text  # c, d: no note yet
    # the referrer by name, the reference in its tooltip
    assert '<span title="Practitioner/gp-1">Grace Okafor</span>' in text
    assert ">not-covered<" in text and ">unreachable<" in text  # where they fell out
    visited = browser.get(f"{page.url}dashboard/referrals?{links(text)['Completion']}")
    assert visited.status_code == 200 and "Visit completed" in visited.text
    shown = set(re.findall(r'/referrals/([0-9a-z-]+)"', visited.text))
    assert shown == {ids["a"], ids["c"], ids["d"]}
    with harness.services.db.read() as c:
        audits = [b for b in c.execute(sa.select(resources.c.body).where(
            resources.c.resource_type == "AuditEvent")).scalars()
            if b["subtype"][0]["code"] == "search"]
    # rows come back in no set order: one of the search audits names the three patients opened
    seen = [{e["what"]["reference"] for e in a["entity"] if "what" in e} for a in audits]
    assert any({"Patient/a", "Patient/c", "Patient/d"} <= patients for patients in seen)
    dropped = re.search(r'href="[^"]*/dashboard/referrals\?([^"]+dropped[^"]+)">1<', text)
    assert dropped is not None
    listed = browser.get(f"{page.url}dashboard/referrals?{html.unescape(dropped.group(1))}")
    assert len(set(re.findall(r'/referrals/([0-9a-z-]+)"', listed.text))) == 1
    exported = browser.get(f"{page.url}dashboard.csv", params=OCTOBER)
    assert exported.status_code == 200 and exported.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert (rows[0]["month"], rows[0]["referrals"], rows[0]["completion_rate"]) == (
        "2026-10", "6", "0.6000")
    assert {r["value"] for r in rows[1:]} == {"Practitioner/gp-1"}  # the breakdown: referrer
    bad = browser.get(f"{page.url}dashboard", params={"grain": "day"})
    assert bad.status_code == 400 and "grain must be week or month" in bad.text
    assert browser.get(f"{page.url}dashboard/referrals",
                       params={"part": "nothing"}).status_code == 400
    # a filter given twice is refused by name, not read as its first value
    for path in ("dashboard", "dashboard.csv", "dashboard/referrals"):
        twice = browser.get(f"{page.url}{path}?payer=A&payer=B&grain=month")
        assert twice.status_code == 400, path
        assert "&#39;payer&#39; is given 2 times" in twice.text or \
            "'payer' is given 2 times" in twice.text, path


def test_a_launch_limited_to_one_patient_cannot_open_the_outcomes(harness: Harness):
    """The figures and the lists behind them count many patients' referrals: a launch whose
    grant holds no user/ scope (one patient at most) gets 403 on every dashboard path."""
    harness.ehr.modes.drop_scopes = {s for s in SCOPES.split() if s.startswith("user/")}
    browser = harness.browser()
    page = harness.launch(browser, patient="p1")
    assert page.status_code == 200
    for path in ("dashboard", "dashboard.csv", "dashboard/referrals"):
        refused = browser.get(f"{page.url}{path}", params=OCTOBER)
        assert refused.status_code == 403, path
        assert "granted this launch access to one patient only" in refused.text, path
