"""Outbound v2 end to end, on SQLite and PostgreSQL: a referral from a v2 sender moves
(accepted, scheduled, no-show, rescheduled, completed) and the configured RRI/SIU messages
arrive at a real MLLP partner (python-hl7's asyncio MLLP server on 127.0.0.1), whose ACKs are
checked. A partner that answers AE/AR, or is down, makes the work item retry with the same
MSH-10; a message that was ACKed is never sent again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import hl7
import pytest
import sqlalchemy as sa

from hl7_bridge.tables import outbound_log
from referrals.model import Actor, Command, Link, Reason
from referrals.store.schema import work_items
from refloop.services import Services
from refloop.settings import Settings

from .conftest import Feed, Partner, fixture, free_port

SENDER = "GPSYS^GPCLINIC"
SOURCE = f"hl7|{SENDER}|REF-2024-0042^GPCLINIC"
CLINIC = Actor("Practitioner/walsh", "Prof Walsh", "human")


@pytest.fixture
def partner_port() -> int:
    """The partner's port: a Partner is started on it by each test that wants one."""
    return free_port()


@pytest.fixture
def settings(database_url: str, tmp_path: Path, partner_port: int) -> Settings:
    hl7_section = {"senders": {SENDER: {"outbound": {
        "host": "127.0.0.1", "port": partner_port, "timeout_seconds": 5, "max_attempts": 4,
        "events": ["accepted", "scheduled", "no-show", "visit-completed"]}}}}
    return Settings(var_dir=tmp_path / "var", database_url=database_url,
                    sections={"hl7": hl7_section})


@pytest.fixture
def partner(partner_port: int) -> Iterator[Partner]:
    started = Partner(port=partner_port).start()
    yield started
    started.stop()


def open_referral(feed: Feed) -> str:
    feed.send(fixture("authored__REF_I12_new_referral_utf8.hl7"))
    feed.drain()
    found = feed.services.store.try_get_by_source(SOURCE)
    assert found is not None
    return found.id


def act(services: Services, referral_id: str, action: str, **kw: object) -> None:
    services.referrals.act(referral_id, Command(action, actor=CLINIC, source="smart",
                                                **kw))  # type: ignore[arg-type]


def book(services: Services, referral_id: str, appointment_id: str, status: str) -> Link:
    services.resources.put({
        "resourceType": "Appointment", "id": appointment_id, "status": status,
        "start": "2024-06-03T09:30:00+01:00", "end": "2024-06-03T10:00:00+01:00",
        "participant": [{"actor": {"reference": "Practitioner/walsh"}, "status": "accepted"}],
    }, server="local")
    return Link("Appointment", f"Appointment/{appointment_id}", status)


def parsed(partner: Partner) -> list[hl7.Message]:
    return [hl7.parse(text) for text in partner.received]


def test_lifecycle_changes_send_the_configured_messages(feed: Feed, partner: Partner) -> None:
    services = feed.services
    referral_id = open_referral(feed)
    assert partner.received == []  # opening the referral is not an outbound event
    act(services, referral_id, "accept")
    link = book(services, referral_id, "appt-1", "booked")
    act(services, referral_id, "schedule", changes={"add_outputs": [link]})
    act(services, referral_id, "no-show", changes={"add_outputs": [
        book(services, referral_id, "appt-1", "noshow")]})
    act(services, referral_id, "schedule", changes={"add_outputs": [
        book(services, referral_id, "appt-2", "booked")]})
    act(services, referral_id, "complete-visit")
    act(services, referral_id, "close-loop")  # not in the configured events: nothing sent
    feed.drain()

    messages = parsed(partner)
    kinds = [str(m.segment("MSH")[9]) for m in messages]
    assert kinds == ["RRI^I12^RRI_I12", "SIU^S12^SIU_S12", "SIU^S26^SIU_S12",
                     "SIU^S12^SIU_S12", "RRI^I13^RRI_I12"]
    accepted = messages[0]
    assert str(accepted.segment("MSA")[2]) == "GP000101"  # answers the original REF
    assert str(accepted.segment("RF1")[1]) == "A"
    assert str(accepted.segment("RF1")[6]) == "REF-2024-0042^GPCLINIC"
    assert str(accepted.segment("MSH")[5]) == "GPSYS" and str(accepted.segment("MSH")[6]) \
        == "GPCLINIC"
    assert "MRN448812" in str(accepted.segment("PID")[3])
    booked, noshow = messages[1], messages[2]
    assert str(booked.segment("SCH")[2]).startswith("appt-1")
    assert str(booked.segment("SCH")[25]) == "Booked"
    assert str(booked.segment("SCH")[11]).split("^")[3].startswith("20240603093000")
    assert str(noshow.segment("SCH")[25]) == "Noshow"
    assert str(messages[3].segment("SCH")[2]).startswith("appt-2")
    control_ids = [str(m.segment("MSH")[10]) for m in messages]
    assert len(set(control_ids)) == len(control_ids)
    with services.db.read() as conn:
        logged = conn.execute(sa.select(outbound_log.c.control_id, outbound_log.c.ack_code)
                              .order_by(outbound_log.c.id)).all()
    assert [row.control_id for row in logged] == control_ids
    assert {row.ack_code for row in logged} == {"AA"}
    # nothing more goes out when the worker runs again
    assert feed.drain() == 0 and len(partner.received) == 5


def test_changes_made_by_the_sender_itself_are_not_echoed(feed: Feed, partner: Partner) -> None:
    """The I14 came from the sender: no RRI back for the cancellation it asked for."""
    referral_id = open_referral(feed)
    act(feed.services, referral_id, "accept")
    feed.drain()
    feed.send(fixture("authored__REF_I14_cancel_referral.hl7"))
    feed.drain()
    assert len(partner.received) == 1


@pytest.mark.parametrize("answers", [["AR", "AE"], ["CR"]])
def test_negative_acks_are_retried_with_the_same_control_id(
        feed: Feed, partner_port: int, answers: list[str]) -> None:
    partner = Partner(answers, port=partner_port).start()
    try:
        feed.services.work.base_backoff = 0.0  # retry at once (the backoff is tested in core)
        referral_id = open_referral(feed)
        act(feed.services, referral_id, "accept")
        feed.drain()
    finally:
        partner.stop()
    ids = [str(m.segment("MSH")[10]) for m in parsed(partner)]
    assert len(ids) == len(answers) + 1 and len(set(ids)) == 1
    with feed.services.db.read() as conn:
        item = conn.execute(sa.select(work_items).where(
            work_items.c.kind == "hl7.outbound")).mappings().one()
        logged = conn.execute(sa.select(outbound_log)).mappings().all()
    assert item["status"] == "done" and item["attempts"] == len(answers) + 1
    assert answers[-1] in item["last_error"]
    assert [row["control_id"] for row in logged] == ids[:1]


def test_a_partner_that_is_down_is_retried_until_it_answers(feed: Feed,
                                                            partner_port: int) -> None:
    feed.services.work.base_backoff = 0.0
    referral_id = open_referral(feed)
    act(feed.services, referral_id, "accept")
    feed.drain(max_rounds=1)
    with feed.services.db.read() as conn:
        item = conn.execute(sa.select(work_items).where(
            work_items.c.kind == "hl7.outbound")).mappings().one()
    assert item["status"] == "pending" and item["attempts"] == 1
    assert "cannot connect" in item["last_error"]
    partner = Partner(port=partner_port).start()
    try:
        feed.drain()
    finally:
        partner.stop()
    assert len(partner.received) == 1
    assert feed.services.work.try_get(item["id"])["status"] == "done"  # type: ignore[index]


def test_after_the_last_attempt_the_message_goes_to_quarantine(feed: Feed,
                                                               partner_port: int) -> None:
    partner = Partner(["AR"] * 10, port=partner_port).start()
    try:
        feed.services.work.base_backoff = 0.0
        referral_id = open_referral(feed)
        act(feed.services, referral_id, "decline", reason=Reason("no-capacity", "full"))
        feed.drain()
        assert partner.received == []  # 'declined' is not in this sender's events
        other = open_referral_other(feed)
        act(feed.services, other, "accept")
        feed.drain()
    finally:
        partner.stop()
    assert len(partner.received) == 4  # max_attempts = 4
    entries = feed.services.quarantine.list()
    assert len(entries) == 1 and entries[0].kind == "hl7.outbound" and "AR" in entries[0].reason
    with feed.services.db.read() as conn:
        assert conn.execute(sa.select(outbound_log)).first() is None


def open_referral_other(feed: Feed) -> str:
    raw = fixture("authored__REF_I12_new_referral_utf8.hl7").replace(
        b"GP000101", b"GP000999").replace(b"REF-2024-0042", b"REF-2024-0999")
    feed.send(raw)
    feed.drain()
    found = feed.services.store.try_get_by_source(f"hl7|{SENDER}|REF-2024-0999^GPCLINIC")
    assert found is not None
    return found.id


def enhanced(control_id: str, app_ack: str, body: bytes) -> bytes:
    return (f"MSH|^~\\&|GPSYS|GPCLINIC|HUB|HUB|20240101120000||SIU^S12|{control_id}|P|2.5.1"
            f"|||AL|{app_ack}\r").encode() + body


def test_enhanced_content_error_gets_ca_then_an_application_ae(feed: Feed,
                                                              partner: Partner) -> None:
    """Missing SCH: the commit ACK is CA (stored), the application ACK AE follows."""
    commit = feed.send(enhanced("E1", "AL", b"PID|1||X^^^GP^MR\r"))
    assert commit is not None and b"MSA|CA|E1" in commit and b"ERR" not in commit
    quiet = feed.send(enhanced("E2", "NE", b"PID|1||X^^^GP^MR\r"))  # MSH-16 NE: none
    assert quiet is not None and b"MSA|CA|E2" in quiet
    with feed.services.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(work_items).where(
            work_items.c.kind == "hl7.message")).scalar() == 0  # kept, never mapped
    assert len(feed.services.quarantine.list()) == 2
    feed.drain()
    (ack,) = parsed(partner)
    assert str(ack.segment("MSA")[1]) == "AE" and str(ack.segment("MSA")[2]) == "E1"
    assert str(ack.segment("MSH")[9]).startswith("ACK^S12")
    assert str(ack.segment("MSH")[5]) == "GPSYS"
    assert str(ack.segment("ERR")[2]) == "SCH^1" and str(ack.segment("ERR")[3]).startswith("100")
    with feed.services.db.read() as conn:
        logged = conn.execute(sa.select(outbound_log)).mappings().one()
    assert logged["message_type"] == "ACK^AE" and logged["control_id"] == \
        str(ack.segment("MSH")[10])
    assert feed.drain() == 0 and len(partner.received) == 1


def test_enhanced_mapping_error_gets_an_application_ae(feed: Feed, partner: Partner) -> None:
    """An ADT without a PID-3 identifier is stored (CA), fails when mapped: AE follows (MSH-16
    ER)."""
    raw = (b"MSH|^~\\&|GPSYS|GPCLINIC|HUB|HUB|20240101120000||ADT^A04|B1|P|2.5.1"
           b"|||AL|ER\rPID|1||||Doe^John\r")
    assert b"MSA|CA|B1" in (feed.send(raw) or b"")
    feed.drain()
    (ack,) = parsed(partner)
    assert str(ack.segment("MSA")[1]) == "AE" and str(ack.segment("MSA")[2]) == "B1"
    assert "PID-3" in str(ack.segment("ERR")[8])


def test_enhanced_ref_without_rf1_6_gets_ca_then_an_application_ae(feed: Feed,
                                                                    partner: Partner) -> None:
    """Enhanced mode: a REF without a referral identifier is stored and kept in quarantine
    (CA), and the application ACK AE that follows names RF1-6; nothing is mapped."""
    raw = (b"MSH|^~\\&|GPSYS|GPCLINIC|HUB|HUB|20240101120000||REF^I12^REF_I12|N1|P|2.5.1"
           b"|||AL|ER\rRF1|A|R\rPID|1||X1^^^GP^MR||Doe^John\r")
    commit = feed.send(raw)
    assert commit is not None and b"MSA|CA|N1" in commit and b"ERR" not in commit
    assert feed.drain() == 1  # the application ACK only
    (ack,) = parsed(partner)
    assert str(ack.segment("MSA")[1]) == "AE" and str(ack.segment("MSA")[2]) == "N1"
    assert str(ack.segment("ERR")[2]) == "RF1^1^6" and "RF1-6" in str(ack.segment("ERR")[8])
    (entry,) = feed.services.quarantine.list()
    assert "RF1-6" in entry.reason
