"""The closed loop by email, on SQLite and PostgreSQL, through outreach's SMTP channel against a
real SMTP server (aiosmtpd) and our pages over real HTTP:

- the chase mails the specialist's office an upload link (no patient name or birth date in the
  mail); the page shows only initials and birth year; a non-PDF is refused, a PDF closes the
  loop, the link then refuses a second upload;
- the note goes to the referring practice as a link (`send-note`); the page asks for the
  patient's date of birth, then downloading the note is the receipt (`record-receipt`, once);
- the practice's milestones go out in one daily digest (`update-referrer`, channel email);
- wrong tokens are throttled per address, a note link locks after five wrong dates; a link is
  kept only as its token's SHA-256 and expires.

(Headless Chromium uses the same links in tests/browser/test_loop_pages.py.)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from loop_world import PDF, Ehr, World, close_world, make_world

from loop.tables import files, links
from outreach.sandbox import MailCapture
from referrals.model import Referral, Stage

OFFICE, PRACTICE = "notes@heart-clinic.example", "referrals@riverside.example"


@dataclass
class MailWorld:
    world: World
    mail: MailCapture


def email_sections(referrer: Ehr, mail: MailCapture) -> tuple[dict[str, Any], dict[str, Any]]:
    loop_section = {
        "specialists": [{"name": "heart-clinic", "specialties": ["cardiology"],
                         "email": OFFICE, "ladder": [{"step": "email", "after_days": 0},
                                                     {"step": "coordinator",
                                                      "after_days": 5}]}],
        "referrers": [{"name": "riverside", "servers": [referrer.base], "channel": "email",
                       "email": PRACTICE, "time_zone": "America/Chicago"}]}
    outreach_section = {"smtp": {"host": "127.0.0.1", "port": mail.port, "security": "none",
                                 "from_address": "referrals@refloop.test"}}
    return loop_section, outreach_section


@pytest.fixture
def mailed(database_url: str, tmp_path: Path, ehrs: tuple[Ehr, Ehr]) -> Iterator[MailWorld]:
    mail = MailCapture().start()
    referrer, specialist = ehrs
    loop_section, outreach_section = email_sections(referrer, mail)
    world = make_world(database_url, tmp_path, referrer, specialist, loop_section,
                       outreach=outreach_section)
    yield MailWorld(world, mail)
    close_world(world)
    mail.stop()


def visited(w: World) -> Referral:
    referral = w.referral()
    w.act(referral.id, "complete-visit")
    w.drain()
    return referral


def mails_to(mail: MailCapture, address: str) -> list[Any]:
    return [m.message for m in mail.messages if address in m.rcpt_tos]


def link_in(message: Any, path: str) -> str:
    text = message.get_body(preferencelist=("plain",)).get_content()
    found = re.search(rf"(http://localhost:\d+{path}[A-Za-z0-9_-]+)", text)
    assert found, text
    return found.group(1)


def test_upload_link_closes_the_loop_and_the_practice_reads_the_note(mailed: MailWorld) -> None:
    w, mail = mailed.world, mailed.mail
    referral = visited(w)
    [ask] = mails_to(mail, OFFICE)
    body = ask.get_body(preferencelist=("plain",)).get_content()
    patient = w.services.resources.try_get("Patient", referral.patient.split("/")[1],
                                           server=w.referrer.base)
    assert patient is not None
    assert patient["name"][0]["family"] not in ask.as_string()
    assert "1958" not in body and "Lena" not in body
    [step] = w.events(referral.id, "chase-note")
    assert step.data["step"] == "email"
    link = link_in(ask, "/loop/u/")
    assert requests.get(link + "x", timeout=10).status_code == 404  # the exact token only
    page = requests.get(link, timeout=10)
    assert page.status_code == 200
    assert "L. M." in page.text and "born 1958" in page.text
    assert patient["name"][0]["family"] not in page.text
    assert page.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    refused = requests.post(link, files={"note": ("note.docx", b"PK\x03\x04 word", "x")},
                            timeout=10)
    assert refused.status_code == 415 and "not a PDF" in refused.text
    [kept] = [q for q in w.services.quarantine.list() if q.kind == "loop.upload"]
    assert referral.id in kept.reason and "not a PDF" in kept.reason
    empty = requests.post(link, files={"note": ("note.pdf", b"", "application/pdf")}, timeout=10)
    assert empty.status_code == 400 and "Choose a PDF" in empty.text
    kept_empty = [q for q in w.services.quarantine.list() if q.kind == "loop.upload"
                  and "Choose a PDF" in q.reason]
    assert len(kept_empty) == 1 and referral.id in kept_empty[0].reason
    done = requests.post(link, files={"note": ("Cardio note.pdf", PDF, "application/pdf")},
                         timeout=10)
    assert done.status_code == 200 and "Consult note received" in done.text
    w.drain()
    closed = w.services.store.get(referral.id)
    assert closed.stage == Stage.LOOP_CLOSED
    [closing] = w.events(referral.id, "close-loop")
    assert closing.source == "loop:upload" and "upload link" in closing.actor.display
    with w.services.db.read() as c:
        [(name, size)] = c.execute(sa.select(files.c.filename, files.c.size).where(
            files.c.referral_id == referral.id)).all()
    assert (name, size) == ("Cardio-note.pdf", len(PDF))
    again = requests.post(link, files={"note": ("x.pdf", PDF, "application/pdf")}, timeout=10)
    assert again.status_code == 410
    # the practice: the note as a link, behind the patient's date of birth
    [note_mail] = [m for m in mails_to(mail, PRACTICE) if "Consult note available" in m["Subject"]]
    assert referral.service_request.split("/")[1] in note_mail["Subject"]
    [sent] = w.events(referral.id, "send-note")
    assert sent.data["channel"] == "link"
    note_link = link_in(note_mail, "/loop/n/")
    assert requests.get(note_link + "x", timeout=10).status_code == 404  # the exact token only
    assert "date of birth" in requests.get(note_link, timeout=10).text
    wrong = requests.post(note_link, data={"day": "3", "month": "11", "year": "1958"},
                          allow_redirects=False, timeout=10)
    assert wrong.status_code == 400 and "4 attempts left" in wrong.text
    right = requests.post(note_link, data={"day": "2", "month": "11", "year": "1958"},
                          allow_redirects=False, timeout=10)
    assert right.status_code == 303 and right.headers["Location"] == "/loop/n/note"
    cookie = right.headers["Set-Cookie"]
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/loop/n"):
        assert flag in cookie
    session = {"Cookie": cookie.split(";")[0]}
    base = w.url
    shown = requests.get(f"{base}/loop/n/note", headers=session, timeout=10)
    assert shown.status_code == 200 and "Download the consult note" in shown.text
    assert w.events(referral.id, "record-receipt") == []  # showing is not receiving
    pdf = requests.get(f"{base}/loop/n/note/file", headers=session, timeout=10)
    assert pdf.content == PDF and pdf.headers["Content-Type"] == "application/pdf"
    requests.get(f"{base}/loop/n/note/file", headers=session, timeout=10)
    [receipt] = w.events(referral.id, "record-receipt")
    assert receipt.data["channel"] == "link"
    assert requests.get(f"{base}/loop/n/note", timeout=10).status_code == 401  # no cookie


def test_the_practices_milestones_go_out_in_one_daily_digest(mailed: MailWorld) -> None:
    w, mail = mailed.world, mailed.mail
    referral = visited(w)
    assert w.events(referral.id, "update-referrer") == []  # gathered, not sent
    assert w.loop.digests.run(w.clock.now, force=True)
    w.drain()
    [digest] = [m for m in mails_to(mail, PRACTICE) if "Referral updates" in m["Subject"]]
    text = digest.get_body(preferencelist=("plain",)).get_content()
    order = referral.service_request.split("/")[1]
    assert text.count(f"Your order {order}") == 2
    assert "The referral was accepted." in text and "seen by the specialist" in text
    updates = w.events(referral.id, "update-referrer")
    assert sorted(e.data["milestone"] for e in updates) == ["accepted", "visit-completed"]
    assert {e.data["channel"] for e in updates} == {"email"}
    # once a day: nothing new, nothing sent
    assert w.loop.digests.run(w.clock.now, force=True) == []


def test_guessed_tokens_are_throttled_and_a_note_link_locks(mailed: MailWorld) -> None:
    w = mailed.world
    assert requests.get(f"{w.url}/loop/u/not-a-token", timeout=10).status_code == 404
    for _ in range(19):
        requests.get(f"{w.url}/loop/n/guess", timeout=10)
    assert requests.get(f"{w.url}/loop/u/another", timeout=10).status_code == 429
    with w.services.db.write() as c:  # another address: a fresh start
        c.execute(sa.text("DELETE FROM loop_link_failures"))
    referral = w.referral()
    token = w.loop.links.issue(referral.id, "note", w.clock.now, document="DocumentReference/x")
    for _ in range(5):
        answer = requests.post(f"{w.url}/loop/n/{token}",
                               data={"day": "1", "month": "1", "year": "1900"}, timeout=10)
    assert answer.status_code == 423 and "locked" in answer.text
    right = requests.post(f"{w.url}/loop/n/{token}",
                          data={"day": "2", "month": "11", "year": "1958"}, timeout=10)
    assert right.status_code == 423
    # an upload link: kept only as the SHA-256 of its token, and expired after link_days (14)
    upload = w.loop.links.issue(referral.id, "upload", w.clock.now)
    with w.services.db.read() as c:
        stored = c.execute(sa.select(links.c.token_hash).where(
            links.c.referral_id == referral.id, links.c.purpose == "upload")).scalar_one()
    assert stored == hashlib.sha256(upload.encode()).hexdigest() and upload not in stored
    assert requests.get(f"{w.url}/loop/u/{upload}", timeout=10).status_code == 200
    w.clock.now += timedelta(days=14, minutes=1)
    expired = requests.get(f"{w.url}/loop/u/{upload}", timeout=10)
    assert expired.status_code == 410 and "expired" in expired.text
