"""The providers' pages in headless Chromium, on SQLite and PostgreSQL, with the links as the
mail carried them (outreach's SMTP channel into aiosmtpd) and sekmet-fhir as the referrer's EHR;
axe-core finds no serious or critical violation on any page, and each page fits 380 px without
sideways scrolling:

the specialist's office opens the upload link, tries a Word file (refused, said why), uploads
the PDF (the loop closes); the referring practice opens the note link, gives a wrong date of
birth (refused), the right one, and downloads the note (the receipt is recorded).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.append(str(Path(__file__).resolve().parent.parent / "integration" / "scheduling"))
sys.path.append(str(Path(__file__).resolve().parent.parent / "integration" / "loop"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from axe import serious_violations
from calendar_data import Sekmet, start_sekmet
from loop_world import PDF, Ehr, World, close_world, make_world
from waits import click_and_wait

from outreach.sandbox import MailCapture
from referrals.model import Stage

OFFICE, PRACTICE = "notes@heart-clinic.example", "referrals@riverside.example"


@pytest.fixture(scope="module")
def ehr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sekmet]:
    peer = start_sekmet(tmp_path_factory.mktemp("loop-ehr"))
    yield peer
    peer.stop()


@pytest.fixture
def mailed(database_url: str, tmp_path: Path, ehr: Sekmet) -> Iterator[tuple[World, Any]]:
    mail = MailCapture().start()
    referrer = Ehr(ehr.base)
    world = make_world(database_url, tmp_path, referrer, referrer, {
        "specialists": [{"name": "heart-clinic", "specialties": ["cardiology"],
                         "email": OFFICE, "ladder": [{"step": "email", "after_days": 0}]}],
        "referrers": [{"name": "riverside", "servers": [referrer.base], "channel": "email",
                       "email": PRACTICE}]},
        outreach={"smtp": {"host": "127.0.0.1", "port": mail.port, "security": "none",
                           "from_address": "referrals@refloop.test"}})
    yield world, mail
    close_world(world)
    mail.stop()


def link_to(mail: MailCapture, address: str, path: str) -> str:
    for captured in mail.messages:
        if address in captured.rcpt_tos:
            text = captured.message.get_body(preferencelist=("plain",)).get_content()
            found = re.search(rf"(http://localhost:\d+{path}[A-Za-z0-9_-]+)", text)
            if found:
                return found.group(1)
    raise AssertionError(f"no mail to {address} with a {path} link")


def check(chrome: Any, seen: list[str]) -> None:
    """No serious accessibility violation, at 1280 px and at 380 px without sideways scroll."""
    for width in (1280, 380):
        chrome.set_window_size(width, 900)
        bad = serious_violations(chrome)
        assert bad == [], f"{chrome.current_url} at {width}px: {bad}"
        wide = chrome.execute_script("return document.documentElement.scrollWidth > "
                                     "document.documentElement.clientWidth")
        assert not wide, f"{chrome.current_url} scrolls sideways at {width}px"
    chrome.set_window_size(1280, 900)
    seen.append(chrome.title)


def submit(chrome: Any) -> None:
    from selenium.webdriver.common.by import By

    click_and_wait(chrome, chrome.find_element(By.CSS_SELECTOR, "form button[type=submit]"), 15)


def test_the_office_uploads_and_the_practice_reads_the_note(
        chrome: Any, mailed: tuple[World, MailCapture], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    w, mail = mailed
    seen: list[str] = []
    referral = w.referral()
    w.act(referral.id, "complete-visit")
    w.drain()
    mail.wait_for(1)
    chrome.get(link_to(mail, OFFICE, "/loop/u/"))
    check(chrome, seen)
    assert "Upload the consult note" in chrome.find_element(By.TAG_NAME, "h1").text
    word = tmp_path / "note.docx"
    word.write_bytes(b"PK\x03\x04 not a pdf")
    chrome.find_element(By.ID, "note").send_keys(str(word))
    submit(chrome)
    assert "not a PDF" in chrome.find_element(By.CSS_SELECTOR, "[role=alert]").text
    check(chrome, seen)
    pdf = tmp_path / "consult-note.pdf"
    pdf.write_bytes(PDF)
    chrome.find_element(By.ID, "note").send_keys(str(pdf))
    submit(chrome)
    assert "Consult note received" in chrome.find_element(By.TAG_NAME, "h1").text
    check(chrome, seen)
    w.drain()
    assert w.services.store.get(referral.id).stage == Stage.LOOP_CLOSED
    # the referring practice reads it
    mail.wait_for(2)
    chrome.get(link_to(mail, PRACTICE, "/loop/n/"))
    check(chrome, seen)
    fill_date(chrome, "2", "12", "1958")
    assert "does not match" in chrome.find_element(By.CSS_SELECTOR, "[role=alert]").text
    check(chrome, seen)
    fill_date(chrome, "2", "11", "1958")
    assert chrome.find_element(By.TAG_NAME, "h1").text == "Consult note"
    check(chrome, seen)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    chrome.execute_cdp_cmd("Browser.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(downloads)})
    chrome.find_element(By.LINK_TEXT, "Download the consult note").click()
    deadline = time.monotonic() + 15
    while not [p for p in downloads.iterdir() if p.suffix == ".pdf"]:
        assert time.monotonic() < deadline, "the note did not download"
        time.sleep(0.1)
    [saved] = [p for p in downloads.iterdir() if p.suffix == ".pdf"]
    time.sleep(0.2)
    assert saved.read_bytes() == PDF
    [receipt] = w.events(referral.id, "record-receipt")
    assert receipt.data["channel"] == "link"
    assert len(seen) == 6


def fill_date(chrome: Any, day: str, month: str, year: str) -> None:
    from selenium.webdriver.common.by import By

    for name, value in (("day", day), ("month", month), ("year", year)):
        field = chrome.find_element(By.ID, name)
        field.clear()
        field.send_keys(value)
    submit(chrome)
