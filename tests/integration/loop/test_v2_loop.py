"""The closed loop over HL7 v2, on SQLite and PostgreSQL, against real MLLP peers (python-hl7's
asyncio MLLP server as the specialist's system and as the referring practice's), with sekmet-fhir
as the EHR the referral came from:

- the visit completes with no note: a REF^I15 status request goes to the specialist's system
  (RF1-6 our referral in our namespace); its ACK records the chase step; the specialist answers
  with an MDM^T02 naming that key (TXA-14), sent over MLLP to our listener: the loop closes;
  a document ORU^R01 naming it in OBR-2 does the same;
- the referring practice gets an RRI^I12 per milestone and the note as an MDM^T02 (the PDF in
  an ED OBX); its AA is the receipt;
- a referral that came from that practice over v2, whose own outbound messages already report
  a stage, is not told twice.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hl7
import pytest
from loop_world import PDF, Ehr, Partner, World, close_world, make_world

from hl7_bridge.client import MllpClient
from referrals.model import Stage

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "hl7v2"
SPECIALIST, PRACTICE = "CARDSYS^HEART", "GPSYS^GPCLINIC"


@dataclass
class V2World:
    world: World
    specialist: Partner
    practice: Partner


@pytest.fixture
def v2(database_url: str, tmp_path: Path, ehrs: tuple[Ehr, Ehr]) -> Iterator[V2World]:
    specialist, practice = Partner().start(), Partner().start()
    referrer_ehr, specialist_ehr = ehrs
    hl7_section = {"port": 0, "senders": {
        SPECIALIST: {"outbound": {"host": "127.0.0.1", "port": specialist.port,
                                  "timeout_seconds": 5, "events": []}},
        PRACTICE: {"outbound": {"host": "127.0.0.1", "port": practice.port,
                                "timeout_seconds": 5, "events": ["accepted"]}}}}
    loop_section = {
        "specialists": [{"name": "heart-clinic", "specialties": ["cardiology"],
                         "v2_partner": SPECIALIST,
                         "ladder": [{"step": "v2-status", "after_days": 0}]}],
        "referrers": [{"name": "gp-clinic", "servers": [referrer_ehr.base, f"hl7:{PRACTICE}"],
                       "channel": "v2", "v2_partner": PRACTICE}]}
    world = make_world(database_url, tmp_path, referrer_ehr, specialist_ehr, loop_section,
                       hl7=hl7_section)
    yield V2World(world, specialist, practice)
    close_world(world)
    specialist.stop()
    practice.stop()


def parsed(partner: Partner) -> list[hl7.Message]:
    return [hl7.parse(text) for text in partner.received]


def kinds(partner: Partner) -> list[str]:
    return [str(m.segment("MSH")[9]) for m in parsed(partner)]


def test_a_status_request_is_answered_by_the_note_which_reaches_the_practice(
        v2: V2World) -> None:
    w = v2.world
    referral = w.referral()
    w.act(referral.id, "complete-visit")
    w.drain()
    [request] = parsed(v2.specialist)
    assert str(request.segment("MSH")[9]) == "REF^I15^REF_I12"
    assert str(request.segment("RF1")[6]) == f"{referral.id}^REFLOOP"
    assert "Consult note requested" in str(request.segment("NTE")[3])
    assert str(request.segment("PID")[3]).startswith("MRN")
    [chased] = w.events(referral.id, "chase-note")
    assert chased.data["step"] == "v2-status"
    # the specialist's system answers with the note, over MLLP, naming our key in TXA-14
    answer = (FIXTURES / "authored__MDM_T02_large_base64_pdf.hl7").read_bytes()
    answer = answer.replace(b"CONSULTSYS|CUH", b"CARDSYS|HEART").replace(
        b"REF-2024-0042^GPCLINIC", f"{referral.id}^REFLOOP".encode())
    with listening(w) as port, MllpClient("127.0.0.1", port, 10) as client:
        ack = client.send(answer)
    assert b"MSA|AA" in ack or b"MSA|CA" in ack
    w.drain()
    closed = w.services.store.get(referral.id)
    assert closed.stage == Stage.LOOP_CLOSED
    [closing] = w.events(referral.id, "close-loop")
    assert closing.source == f"hl7:{SPECIALIST}"
    assert w.loop.chaser.get(referral.id).stopped_by == f"hl7:{SPECIALIST}"
    # the practice: RRI^I12 per milestone, then the note as MDM^T02
    messages = parsed(v2.practice)
    assert kinds(v2.practice) == ["RRI^I12^RRI_I12"] * 3 + ["MDM^T02^MDM_T02"]
    notes = [str(m.segment("NTE")[3]) for m in messages[:3]]
    assert notes == ["The referral was accepted.", "The patient was seen by the specialist.",
                     "The specialist's consult note is available."]
    assert [str(m.segment("RF1")[1]) for m in messages[:3]] == ["A", "A", "A"]
    mdm = messages[3]
    assert str(mdm.segment("TXA")[14]) == f"{referral.id}^REFLOOP"
    sent_pdf = base64.b64decode(str(mdm.segment("OBX")[5]).split("^")[4])
    assert sent_pdf.startswith(b"%PDF-")
    [received] = w.events(referral.id, "record-receipt")
    assert received.data["channel"] == "v2" and received.data["remote"].startswith("MSH-10 ")
    assert sorted(e.data["milestone"] for e in w.events(referral.id, "update-referrer")) == [
        "accepted", "note-available", "visit-completed"]
    assert {e.data["channel"] for e in w.events(referral.id, "update-referrer")} == {"v2"}


def test_a_v2_referral_is_not_told_twice_what_the_bridge_reports_itself(v2: V2World) -> None:
    w = v2.world
    feed = w.services.adapters["hl7"]
    raw = (FIXTURES / "authored__REF_I12_new_referral_utf8.hl7").read_bytes()
    feed.intake.store([feed.intake.assess_frame(raw)])
    w.drain()
    referral = w.services.store.try_get_by_source(f"hl7|{PRACTICE}|REF-2024-0042^GPCLINIC")
    assert referral is not None
    w.act(referral.id, "accept")          # the bridge's own RRI^I12 (outbound events)
    w.act(referral.id, "complete-visit")  # not among its events: the loop tells the practice
    w.drain()
    messages = parsed(v2.practice)
    senders = [str(m.segment("MSH")[10])[:3] for m in messages]
    assert senders == ["RFO", "RFP"]  # one from the bridge, one from the loop
    assert str(messages[1].segment("NTE")[3]) == "The patient was seen by the specialist."
    assert [e.data["milestone"] for e in w.events(referral.id, "update-referrer")] == [
        "visit-completed"]


def test_a_document_oru_naming_our_key_stops_the_chase_and_closes_the_loop(
        v2: V2World) -> None:
    """The other v2 answer: an ORU^R01 whose OBR-2 is our key and whose OBX carries the PDF."""
    w = v2.world
    referral = w.referral()
    w.act(referral.id, "complete-visit")
    w.drain()
    assert w.loop.chaser.get(referral.id).status == "chasing"
    pid = next(line for line in (FIXTURES / "authored__MDM_T02_large_base64_pdf.hl7")
               .read_bytes().split(b"\r") if line.startswith(b"PID|"))
    pdf = base64.b64encode(PDF).decode()
    oru = b"\r".join([
        b"MSH|^~\\&|CARDSYS|HEART|REFHUB|HUB|20240611090000||ORU^R01^ORU_R01|ORU0001|P|2.5.1"
        b"|||AL|NE", pid,
        f"OBR|1|{referral.id}^REFLOOP|HRT-77|11488-4^Consult note^LN|||20240611083000"
        f"|||||||||||||||20240611090000||CAR|F".encode(),
        f"OBX|1|ED|11488-4^Consult note^LN||^AP^PDF^Base64^{pdf}||||||F".encode()]) + b"\r"
    with listening(w) as port, MllpClient("127.0.0.1", port, 10) as client:
        ack = client.send(oru)
    assert b"MSA|AA" in ack or b"MSA|CA" in ack
    w.drain()
    closed = w.services.store.get(referral.id)
    assert closed.stage == Stage.LOOP_CLOSED
    [closing] = w.events(referral.id, "close-loop")
    assert closing.source == f"hl7:{SPECIALIST}"
    [document] = [o.reference for o in closed.outputs
                  if o.reference.startswith("DocumentReference/")]
    stored = w.services.resources.try_get("DocumentReference", document.split("/")[1],
                                          server=f"hl7:{SPECIALIST}")
    assert stored is not None
    assert base64.b64decode(stored["content"][0]["attachment"]["data"]) == PDF
    chase = w.loop.chaser.get(referral.id)
    assert (chase.status, chase.stopped_by) == ("stopped", f"hl7:{SPECIALIST}")
    assert kinds(v2.practice)[-1] == "MDM^T02^MDM_T02"  # the note goes on to the practice


class listening:
    """Our MLLP listener on a free port in a thread, for the specialist to send to."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> int:
        from hl7_bridge.listener import run_listener

        adapter = self.world.services.adapters["hl7"]
        ready, box = threading.Event(), []
        self.thread = threading.Thread(target=run_listener, args=(
            adapter.config, adapter.intake, self.stop, ready, box), daemon=True)
        self.thread.start()
        assert ready.wait(10), "the MLLP listener did not start"
        return int(box[0])

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(10)
