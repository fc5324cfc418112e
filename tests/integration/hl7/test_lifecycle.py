"""v2 messages into the referral lifecycle, on SQLite and PostgreSQL: REF I12/I13/I14/I15,
SIU S12/S26, MDM T02 (the consult note closes the loop), parking, A40 merges, quarantine."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import sqlalchemy as sa

from hl7_bridge.tables import parked, patient_ids
from referrals.model import Stage
from referrals.store.schema import inbox, resource_versions, resources, work_items
from referrals.worker import Worker

from .conftest import Feed, fixture

SENDER = "GPSYS^GPCLINIC"
SOURCE = f"hl7|{SENDER}|REF-2024-0042^GPCLINIC"


def referral(feed: Feed):
    return feed.services.store.try_get_by_source(SOURCE)


def test_ref_i12_opens_one_referral_with_its_resources(feed: Feed) -> None:
    ack = feed.send(fixture("authored__REF_I12_new_referral_utf8.hl7"))
    assert ack is not None and b"MSA|CA|GP000101" in ack
    feed.drain()
    found = referral(feed)
    assert found is not None and found.stage == Stage.DETECTED
    assert found.priority == "routine"
    sr = feed.services.resources.try_get("ServiceRequest",
                                         found.service_request.split("/")[1],
                                         server=f"hl7:{SENDER}")
    assert sr is not None and sr["status"] == "active" and sr["intent"] == "order"
    assert sr["subject"]["reference"] == found.patient
    patient = feed.services.resources.try_get("Patient", found.patient.split("/")[1],
                                              server=f"hl7:{SENDER}")
    assert patient is not None and patient["name"][0]["given"][0] == "Siobhán"
    # the same message again (sender resend) is ACKed again and not applied twice
    again = feed.send(fixture("authored__REF_I12_new_referral_utf8.hl7"))
    assert again is not None and b"MSA|CA|GP000101" in again
    assert feed.drain() == 0
    assert len(feed.services.store.events(found.id)) == 1


def test_i13_amends_and_i14_cancels(feed: Feed) -> None:
    feed.send(fixture("authored__REF_I12_new_referral_utf8.hl7"))
    feed.send(fixture("authored__REF_I13_modify_referral.hl7"))
    feed.drain()
    assert referral(feed).priority == "asap"
    feed.send(fixture("authored__REF_I14_cancel_referral.hl7"))
    feed.drain()
    assert referral(feed).stage == Stage.CANCELLED


def test_siu_before_ref_is_parked_then_applied(feed: Feed) -> None:
    """SIU S12 and S26 arrive before the REF: parked, never dropped, applied in order."""
    feed.send(fixture("authored__SIU_S12_v27_truncation_char_and_TQ1.hl7"))
    feed.send(fixture("authored__SIU_S26_noshow.hl7"))
    feed.drain()
    with feed.services.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(parked)).scalar() == 2
    assert referral(feed) is None
    feed.send(fixture("authored__REF_I12_new_referral_utf8.hl7"))
    feed.drain()
    found = referral(feed)
    assert found.stage == Stage.NO_SHOW
    actions = [e.action for e in feed.services.store.events(found.id)]
    assert actions == ["detect", "accept", "schedule", "no-show"]
    with feed.services.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(parked)).scalar() == 0
        statuses = conn.execute(sa.select(inbox.c.status)).scalars().all()
    assert set(statuses) == {"processed"}


def test_consult_note_closes_the_loop(feed: Feed) -> None:
    feed.send(fixture("authored__REF_I12_new_referral_utf8.hl7"))
    feed.send(fixture("authored__SIU_S12_v27_truncation_char_and_TQ1.hl7"))
    feed.send(fixture("authored__MDM_T02_large_base64_pdf.hl7"))
    feed.drain()
    found = referral(feed)
    assert found.stage == Stage.LOOP_CLOSED
    doc_link = [o for o in found.outputs if o.type == "DocumentReference"]
    assert len(doc_link) == 1
    with feed.services.db.read() as conn:
        body = conn.execute(sa.select(resources.c.body).where(
            resources.c.resource_type == "DocumentReference")).scalar_one()
    attachment = body["content"][0]["attachment"]
    assert attachment["contentType"] == "application/pdf"
    assert attachment["data"].startswith("JVBERi0")  # %PDF in base64
    assert len(attachment["data"]) > 200_000


@pytest.mark.parametrize("status", ["Arrived", "Started"])
def test_an_s14_saying_the_patient_came_completes_the_visit(feed: Feed, status: str) -> None:
    """SIU^S14 with SCH-25 Arrived (what schedulers send, outside table 0278) or Started: the
    visit happened, so the referral moves to visit-completed (the consult note is owed)."""
    feed.send(fixture("authored__REF_I12_new_referral_utf8.hl7"))
    booked = fixture("authored__SIU_S12_v27_truncation_char_and_TQ1.hl7")
    feed.send(booked)
    came = booked.replace(b"SIU^S12^SIU_S12|SCH0001", b"SIU^S14^SIU_S12|SCH0002").replace(
        b"Booked^Booked^HL70278", f"{status}^{status}^HL70278".encode())
    feed.send(came)
    feed.drain()
    found = referral(feed)
    assert found.stage == Stage.VISIT_COMPLETED
    assert [e.action for e in feed.services.store.events(found.id)] == [
        "detect", "accept", "schedule", "complete-visit"]


def test_a40_links_patients_and_never_duplicates(feed: Feed) -> None:
    old = (b"MSH|^~\\&|PAS|HOSP|HUB|HUB|20240101120000||ADT^A04|M1|P|2.5.1\r"
           b"PID|1||OLD1^^^HOSP^MR||Doe^Jane||19800101|F\r")
    new = (b"MSH|^~\\&|PAS|HOSP|HUB|HUB|20240101120000||ADT^A04|M2|P|2.5.1\r"
           b"PID|1||NEW1^^^HOSP^MR||Doe^Jane||19800101|F\r")
    merge = (b"MSH|^~\\&|PAS|HOSP|HUB|HUB|20240102120000||ADT^A40^ADT_A39|M3|P|2.5.1\r"
             b"EVN|A40|20240102120000\rPID|1||NEW1^^^HOSP^MR||Doe^Jane||19800101|F\r"
             b"MRG|OLD1^^^HOSP^MR\r")
    for raw in (old, new, merge, merge.replace(b"|M3|", b"|M4|")):
        assert b"MSA|AA" in (feed.send(raw) or b"")
    feed.drain()
    with feed.services.db.read() as conn:
        bodies = conn.execute(sa.select(resources.c.body).where(
            resources.c.resource_type == "Patient")).scalars().all()
        owners = dict(conn.execute(sa.select(patient_ids.c.value,
                                             patient_ids.c.patient_id)).all())
    assert len(bodies) == 2
    by_value = {b["identifier"][0]["value"]: b for b in bodies}
    survivor, retired = by_value["NEW1"], by_value["OLD1"]
    assert retired["active"] is False
    assert retired["link"] == [{"other": {"reference": f"Patient/{survivor['id']}"},
                                "type": "replaced-by"}]
    assert survivor["link"] == [{"other": {"reference": f"Patient/{retired['id']}"},
                                 "type": "replaces"}]
    assert owners["OLD1"] == owners["NEW1"] == survivor["id"]
    # a later message with the old MRN updates the survivor, not a third patient
    feed.send(old.replace(b"|M1|", b"|M5|").replace(b"ADT^A04", b"ADT^A08"))
    feed.drain()
    with feed.services.db.read() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(resources).where(
            resources.c.resource_type == "Patient")).scalar()
    assert count == 2


def test_bad_content_after_the_ack_goes_to_quarantine(feed: Feed) -> None:
    """An ADT whose PID-3 holds no identifier is accepted (stored) but cannot be mapped:
    quarantined, not lost."""
    raw = (b"MSH|^~\\&|GPSYS|GPCLINIC|HUB|HUB|20240101120000||ADT^A04|B1|P|2.5.1\r"
           b"PID|1||||Doe^John\r")
    assert b"MSA|AA|B1" in (feed.send(raw) or b"")
    feed.drain()
    entries = feed.services.quarantine.list()
    with feed.services.db.read() as conn:
        status, note = conn.execute(sa.select(inbox.c.status, inbox.c.note)).one()
    assert status == "quarantined" and "PID-3" in note
    assert len(entries) == 1 and "PID-3" in entries[0].reason


def test_ref_without_a_referral_identifier_gets_ae_before_the_ack(feed: Feed) -> None:
    """A REF without RF1-6 (or an ORC/OBR placer number) can never become a referral: AE with
    an ERR naming RF1-6 at once, kept in quarantine, never queued for mapping."""
    raw = (b"MSH|^~\\&|GPSYS|GPCLINIC|HUB|HUB|20240101120000||REF^I12^REF_I12|B2|P|2.5.1\r"
           b"RF1|A|R||||\r"
           b"PID|1||X1^^^GP^MR||Doe^John\r")
    ack = feed.send(raw) or b""
    assert b"MSA|AE|B2" in ack and b"ERR||RF1^1^6|101^" in ack
    with feed.services.db.read() as conn:
        assert conn.execute(sa.select(inbox.c.status)).scalar_one() == "rejected"
    (entry,) = feed.services.quarantine.list()
    assert "RF1-6" in entry.reason
    assert feed.services.work.counts() == {}
    # the same referral with RF1-6, or keyed on an OBR placer number, is accepted
    keyed = raw.replace(b"|B2|", b"|B3|").replace(b"RF1|A|R||||", b"RF1|A|R||||R-1^GP")
    assert b"MSA|AA|B3" in (feed.send(keyed) or b"")
    by_order = raw.replace(b"|B2|", b"|B4|") + b"OBR|1|ORD-7^GP||57133-1^Referral^LN\r"
    assert b"MSA|AA|B4" in (feed.send(by_order) or b"")


def test_content_error_gets_ae_and_is_kept(feed: Feed) -> None:
    raw = b"MSH|^~\\&|GPSYS|GPCLINIC|HUB|HUB|20240101120000||SIU^S12|C1|P|2.5.1\rPID|1||X\r"
    ack = feed.send(raw)
    assert ack is not None and b"MSA|AE|C1" in ack and b"ERR||SCH^1|100^" in ack
    with feed.services.db.read() as conn:
        assert conn.execute(sa.select(inbox.c.status)).scalar_one() == "rejected"


def test_enhanced_content_error_without_return_address(feed: Feed) -> None:
    """Enhanced mode, MSH-16 AL, but no outbound address for the sender: CA (stored), the
    message is kept in quarantine, and no application ACK is queued (nowhere to send it)."""
    raw = (b"MSH|^~\\&|GPSYS|GPCLINIC|HUB|HUB|20240101120000||SIU^S12|C2|P|2.5.1|||AL|AL\r"
           b"PID|1||X\r")
    ack = feed.send(raw)
    assert ack is not None and b"MSA|CA|C2" in ack
    with feed.services.db.read() as conn:
        assert conn.execute(sa.select(inbox.c.status)).scalar_one() == "rejected"
    entries = feed.services.quarantine.list()
    assert len(entries) == 1 and "SCH" in entries[0].reason
    assert feed.services.work.counts() == {}


def test_a_bad_message_in_a_batch_blocks_nothing_and_order_is_kept(
        feed: Feed, caplog: pytest.LogCaptureFixture) -> None:
    """The messages are applied in one transaction per batch; the bad one in the middle goes
    to quarantine alone, the ones before and after it are applied, in inbox order."""
    bad = (b"MSH|^~\\&|GPSYS|GPCLINIC|HUB|HUB|20240101120000||ADT^A04|B9|P|2.5.1\r"
           b"PID|1||||Doe^John\r")
    feed.send(fixture("authored__REF_I12_new_referral_utf8.hl7"))
    feed.send(fixture("authored__SIU_S12_v27_truncation_char_and_TQ1.hl7"))
    feed.send(bad)
    feed.send(fixture("authored__SIU_S26_noshow.hl7"))
    feed.send(fixture("authored__REF_I13_modify_referral.hl7"))
    with caplog.at_level(logging.INFO, logger="refloop.hl7.apply"):
        assert feed.drain() == 5
    stopped = [r for r in caplog.records if r.getMessage().startswith("HL7 batch stopped")]
    assert [r.batch for r in stopped] == [5]  # type: ignore[attr-defined]
    found = referral(feed)
    assert [e.action for e in feed.services.store.events(found.id)] == \
        ["detect", "accept", "schedule", "no-show", "amend"]
    with feed.services.db.read() as conn:
        statuses = conn.execute(sa.select(inbox.c.status).order_by(inbox.c.id)).scalars().all()
    assert statuses == ["processed", "processed", "quarantined", "processed", "processed"]
    (entry,) = feed.services.quarantine.list()
    assert "PID-3" in entry.reason
    assert feed.services.work.counts() == {"done": 4, "quarantined": 1}


def test_batches_prepared_ahead_keep_order_and_block_nothing(feed: Feed) -> None:
    """Batches of two: each next batch is claimed, parsed and mapped in a thread while the one
    before it is written, all in one call. The bad message still goes to quarantine alone, the
    one after it in its batch runs on its own, and the referral's events keep inbox order."""
    applier = feed.adapter.applier
    applier.config = dataclasses.replace(applier.config, mapping_batch=2)
    bad = (b"MSH|^~\\&|GPSYS|GPCLINIC|HUB|HUB|20240101120000||ADT^A04|B9|P|2.5.1\r"
           b"PID|1||||Doe^John\r")
    for raw in (fixture("authored__REF_I12_new_referral_utf8.hl7"),
                fixture("authored__SIU_S12_v27_truncation_char_and_TQ1.hl7"), bad,
                fixture("authored__SIU_S26_noshow.hl7"),
                fixture("authored__REF_I13_modify_referral.hl7")):
        feed.send(raw)
    assert Worker(feed.services.work, {"hl7.message": applier}, batch=1).run_once() == 1
    assert feed.services.work.counts() == {"done": 4, "quarantined": 1}
    found = referral(feed)
    assert [e.action for e in feed.services.store.events(found.id)] == \
        ["detect", "accept", "schedule", "no-show", "amend"]
    with feed.services.db.read() as conn:
        statuses = conn.execute(sa.select(inbox.c.status).order_by(inbox.c.id)).scalars().all()
    assert statuses == ["processed", "processed", "quarantined", "processed", "processed"]


def test_one_batch_parks_then_wakes_and_reads_merges_it_just_wrote(feed: Feed) -> None:
    """All in ONE batch (the batch reads the patient index, resource versions and parked keys
    once, then keeps them current): the SIU parked early is woken by the REF that follows it,
    and after an A40 the retired MRN leads to the survivor, not to a third patient."""
    old = (b"MSH|^~\\&|PAS|HOSP|HUB|HUB|20240101120000||ADT^A04|M1|P|2.5.1\r"
           b"PID|1||OLD1^^^HOSP^MR||Doe^Jane||19800101|F\r")
    merge = (b"MSH|^~\\&|PAS|HOSP|HUB|HUB|20240102120000||ADT^A40^ADT_A39|M3|P|2.5.1\r"
             b"EVN|A40|20240102120000\rPID|1||NEW1^^^HOSP^MR||Doe^Jane||19800101|F\r"
             b"MRG|OLD1^^^HOSP^MR\r")
    feed.send(fixture("authored__SIU_S12_v27_truncation_char_and_TQ1.hl7"))
    feed.send(fixture("authored__REF_I12_new_referral_utf8.hl7"))
    feed.send(old)
    feed.send(merge)
    feed.send(old.replace(b"|M1|", b"|M5|").replace(b"ADT^A04", b"ADT^A08"))
    assert feed.drain() == 6  # five messages and the woken SIU's new work item
    found = referral(feed)
    assert [e.action for e in feed.services.store.events(found.id)] == \
        ["detect", "accept", "schedule"]
    with feed.services.db.read() as conn:
        patients = conn.execute(sa.select(resources.c.body).where(
            resources.c.resource_type == "Patient",
            resources.c.server == "hl7:PAS^HOSP")).scalars().all()
        owners = dict(conn.execute(sa.select(patient_ids.c.value, patient_ids.c.patient_id)
                                   .where(patient_ids.c.value.in_(["OLD1", "NEW1"]))).all())
        statuses = conn.execute(sa.select(inbox.c.status)).scalars().all()
    assert len(patients) == 2
    assert owners["OLD1"] == owners["NEW1"]
    survivor = next(p for p in patients if p["id"] == owners["NEW1"])
    assert survivor["link"][0]["type"] == "replaces"
    assert set(statuses) == {"processed"}


def test_a_batch_run_again_applies_nothing_twice(feed: Feed) -> None:
    """A crash after the batch's commit but before the worker completes its items: the items
    are handed out again and the re-run changes nothing (inbox rows say processed)."""
    feed.send(fixture("authored__REF_I12_new_referral_utf8.hl7"))
    feed.send(fixture("authored__REF_I13_modify_referral.hl7"))
    assert feed.drain() == 2
    with feed.services.db.write() as conn:  # as if the completions were lost
        conn.execute(work_items.update().values(status="pending", lease_owner=None,
                                                lease_expires=None))
    with feed.services.db.read() as conn:
        versions_before = conn.execute(sa.select(sa.func.count()).select_from(
            resource_versions)).scalar()
    assert feed.drain() == 2
    found = referral(feed)
    assert [e.action for e in feed.services.store.events(found.id)] == ["detect", "amend"]
    with feed.services.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(
            resource_versions)).scalar() == versions_before
