"""Entity identifiers are matched as senders write them (id plus namespace, the sender's
application by default), and parked messages expire into quarantine with an alert; on SQLite
and PostgreSQL."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from hl7_bridge import index
from hl7_bridge.ids import time_ordered_id
from hl7_bridge.lookups import BatchLookups
from hl7_bridge.tables import parked, patient_ids, referral_keys
from referrals.model import Referral, Stage
from referrals.store.schema import inbox, referrals, resources
from refloop.cli import main

from .conftest import Feed

REF = ("MSH|^~\\&|ACMEEHR|NORTHCLINIC|REFHUB|HUB|20240601100000+0000||REF^I12^REF_I12|NC1|P|2.5.1\r"
       "RF1|P|R|Med||O|NC-R-55121|20240601\r"
       "PRD|RP|Nurse^Nora\r"
       "PID|1||NC-MRN-1^^^NORTHCLINIC^MR||Case^Carla||19800101|F\r")
SOURCE_PREFIX = "hl7|ACMEEHR^NORTHCLINIC|"


def siu(placer: str, control: str = "S1", sender: str = "SCHED|CUH") -> str:
    sch = ["SCH", "APPT1^SCHED", "APPT1^CUH", *[""] * 22, "Booked", placer]
    return (f"MSH|^~\\&|{sender}|REFHUB|HUB|20240602100000+0000||SIU^S12^SIU_S12|{control}|P|"
            "2.5.1\r" + "|".join(sch) + "\r"
            "TQ1|1||||||20240610090000+0000|20240610093000+0000\r"
            "PID|1||NC-MRN-1^^^NORTHCLINIC^MR||Case^Carla||19800101|F\rRGS|1\r")


def mdm(order: str) -> str:
    txa = ["TXA", "1", "CN^Consult note", "TX", "", "", "20240620120000+0000", *[""] * 5,
           "DOC-1", "", order, "", "", "AU"]
    return ("MSH|^~\\&|CARDIO|CUH|REFHUB|HUB|20240620120000+0000||MDM^T02^MDM_T02|D1|P|2.5.1\r"
            "EVN|T02|20240620120000\rPID|1||NC-MRN-1^^^NORTHCLINIC^MR||Case^Carla\rPV1|1|O\r"
            + "|".join(txa) + "\rOBX|1|TX|11488-4^Consult note^LN||Seen and treated.\r")


def the_referral(feed: Feed) -> Referral:
    found = feed.services.store.list(where=[referrals.c.source_key.like(SOURCE_PREFIX + "%")])
    assert len(found) == 1, found
    return found[0]


def send(feed: Feed, text: str) -> None:
    ack = feed.send(text.encode())
    assert ack is not None and (b"MSA|AA|" in ack or b"MSA|CA|" in ack), ack


def test_bare_rf1_6_matches_the_namespaced_sch_26_and_txa_14(feed: Feed) -> None:
    """RF1-6 `NC-R-55121` from ACMEEHR is `NC-R-55121^ACMEEHR` in another sender's SCH-26
    and TXA-14: the appointment and the consult note reach the referral, nothing parks."""
    send(feed, REF)
    send(feed, siu("NC-R-55121^ACMEEHR"))
    send(feed, mdm("NC-R-55121^ACMEEHR"))
    feed.drain()
    referral = the_referral(feed)
    assert [e.action for e in feed.services.store.events(referral.id)] == \
        ["detect", "accept", "schedule", "close-loop"]
    assert referral.stage == Stage.LOOP_CLOSED
    with feed.services.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(parked)).scalar() == 0
        keys = set(conn.execute(sa.select(referral_keys.c.key)).scalars())
    assert "NC-R-55121^ACMEEHR" in keys


def test_a_parked_namespaced_message_wakes_when_the_bare_ref_arrives(feed: Feed) -> None:
    send(feed, siu("NC-R-55121^ACMEEHR"))
    feed.drain()
    with feed.services.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(parked)).scalar() == 1
    send(feed, REF)
    feed.drain()
    referral = the_referral(feed)
    assert referral.stage == Stage.SCHEDULED
    with feed.services.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(parked)).scalar() == 0
        assert set(conn.execute(sa.select(inbox.c.status)).scalars()) == {"processed"}


def test_a_bare_id_from_another_sender_is_that_senders_own(feed: Feed) -> None:
    """SCHED's bare `NC-R-55121` is SCHED's identifier, not ACMEEHR's: it waits."""
    send(feed, REF)
    send(feed, siu("NC-R-55121"))
    feed.drain()
    assert the_referral(feed).stage == Stage.DETECTED
    with feed.services.db.read() as conn:
        waiting = conn.execute(sa.select(parked.c.waiting_for)).scalars().all()
    assert waiting == ["referral:NC-R-55121^SCHED"]


def test_the_universal_id_of_the_senders_application_is_the_same_namespace(
        feed: Feed) -> None:
    """MSH-3 `ACMEEHR^1.2.840.99^ISO`: a bare RF1-6 matches `NC-R-55121^^1.2.840.99^ISO`."""
    send(feed, REF.replace("|ACMEEHR|", "|ACMEEHR^1.2.840.99^ISO|", 1))
    send(feed, siu("NC-R-55121^^1.2.840.99^ISO"))
    feed.drain()
    assert the_referral(feed).stage == Stage.SCHEDULED


def park_one(feed: Feed) -> int:
    send(feed, siu("NEVER-COMES^ACMEEHR", control="S9"))
    feed.drain()
    with feed.services.db.read() as conn:
        return int(conn.execute(sa.select(parked.c.inbox_id)).scalar_one())


def test_parked_messages_expire_into_quarantine_with_an_alert(
        feed: Feed, caplog: pytest.LogCaptureFixture) -> None:
    inbox_id = park_one(feed)
    expiry = feed.adapter.parking
    assert expiry.expire(datetime.now(UTC)) == 0  # not yet
    later = datetime.now(UTC) + timedelta(hours=feed.adapter.config.parked_expiry_hours,
                                          minutes=1)
    with caplog.at_level(logging.WARNING, logger="refloop.hl7.parking"):
        assert expiry.expire(later) == 1
    (alert,) = [r for r in caplog.records if r.getMessage() == "HL7 parked message expired"]
    assert alert.inbox_id == inbox_id  # type: ignore[attr-defined]
    assert alert.waiting_for == "referral:NEVER-COMES^ACMEEHR"  # type: ignore[attr-defined]
    (entry,) = feed.services.quarantine.list()
    assert entry.inbox_id == inbox_id and entry.kind == "hl7-parked-expired"
    assert "NEVER-COMES^ACMEEHR" in entry.reason and "never arrived" in entry.reason
    assert entry.original.startswith(b"MSH|")
    with feed.services.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(parked)).scalar() == 0
        status = conn.execute(sa.select(inbox.c.status).where(inbox.c.id == inbox_id)).scalar()
    assert status == "quarantined"
    assert expiry.expire(later) == 0  # once


def test_the_expiry_runs_as_timed_work(feed: Feed) -> None:
    """The `hl7.expire-parked` timer's work item expires what is due (here: with a zero
    expiry, everything parked)."""
    from refloop.scheduler import enqueue_due
    from refloop.wiring import all_timers

    park_one(feed)
    feed.adapter.parking.expiry = timedelta(0)
    timers = [t for t in all_timers(feed.services) if t.kind == "hl7.expire-parked"]
    assert len(timers) == 1
    enqueue_due(feed.services.work, timers)
    feed.drain()
    (entry,) = feed.services.quarantine.list()
    assert entry.kind == "hl7-parked-expired"


def test_hl7_parked_lists_age_and_expiry(feed: Feed, database_url: str,
                                         tmp_path: Path) -> None:
    inbox_id = park_one(feed)
    config = tmp_path / "refloop.toml"
    config.write_text(f'database_url = "{database_url}"\nvar_dir = "{tmp_path / "var"}"\n'
                      'log_level = "WARNING"\n[hl7]\nparked_expiry_hours = 48\n')
    base = ["--config", str(config)]
    result = CliRunner().invoke(main, [*base, "hl7", "parked", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["inbox_id"] == inbox_id and row["sender"] == "SCHED^CUH"
    assert row["waiting_for"] == "referral:NEVER-COMES^ACMEEHR"
    parked_at = datetime.fromisoformat(row["parked_at"])
    assert datetime.fromisoformat(row["expires_at"]) - parked_at == timedelta(hours=48)
    text = CliRunner().invoke(main, [*base, "hl7", "parked"])
    assert text.exit_code == 0, text.output
    assert "NEVER-COMES^ACMEEHR" in text.stdout and "expires" in text.stdout


def test_the_migration_gives_bare_keys_their_senders_namespace(tmp_path: Path) -> None:
    """Keys stored before 0350_hl7_keys as `id^` become `id^<application>`, so a referral
    opened then is still found by its id, bare or namespaced (SQLite: the data step is
    dialect-neutral SQL)."""
    from alembic import command

    from referrals.store import connect
    from referrals.store.migrate import alembic_config, upgrade

    db = connect(f"sqlite:///{tmp_path / 'old.db'}")
    config = alembic_config(db)
    with db.write() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0003_hl7")
        conn.execute(sa.text("INSERT INTO hl7_referral_keys (key, referral_id, sender, patient) "
                             "VALUES ('OLD-1^', 'r1', 'ACMEEHR^NORTHCLINIC', 'Patient/p'), "
                             "('KEEP-1^GPCLINIC', 'r2', 'GPSYS^GPCLINIC', 'Patient/q')"))
        conn.execute(sa.text("INSERT INTO inbox (id, channel, sender, received_at, headers, body,"
                             " status, note) VALUES (7, 'hl7v2', 'SCHED^CUH', "
                             "'2024-01-01 00:00:00', '{}', x'00', 'parked', '')"))
        conn.execute(sa.text("INSERT INTO hl7_parked (inbox_id, waiting_for, parked_at) VALUES "
                             "(7, 'referral:WAIT-1^', '2024-01-01 00:00:00')"))
    upgrade(db)
    with db.read() as conn:
        keys = dict(conn.execute(sa.select(referral_keys.c.key,
                                           referral_keys.c.referral_id)).all())
        waiting = conn.execute(sa.select(parked.c.waiting_for)).scalar_one()
    db.dispose()
    assert keys == {"OLD-1^ACMEEHR": "r1", "KEEP-1^GPCLINIC": "r2"}
    assert waiting == "referral:WAIT-1^SCHED"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_new_patient_indexed_meanwhile_by_another_worker_is_the_one_used(
        feed: Feed, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers (PostgreSQL: several can write at once) map the same new patient at the same
    moment, each with its own time-ordered id. The second to write its identifiers finds them
    taken: its batch is not committed with a second patient, but runs again and uses the
    first one's."""
    competitor = time_ordered_id()
    real_flush = BatchLookups.flush

    def flush_after_the_other_worker(self: BatchLookups) -> None:
        if self.new_patient_ids and not getattr(flush_after_the_other_worker, "done", False):
            flush_after_the_other_worker.done = True  # type: ignore[attr-defined]
            with feed.services.db.write() as other:
                index.insert_patient_ids(other, [
                    {**row, "patient_id": competitor} for row in self.new_patient_ids])
        real_flush(self)

    monkeypatch.setattr(BatchLookups, "flush", flush_after_the_other_worker)
    send(feed, REF)
    assert feed.drain()
    referral = the_referral(feed)
    assert referral.patient == f"Patient/{competitor}"
    with feed.services.db.read() as conn:
        owners = set(conn.execute(sa.select(patient_ids.c.patient_id)).scalars())
        patients = list(conn.execute(sa.select(resources.c.resource_id).where(
            resources.c.resource_type == "Patient")).scalars())
    assert owners == {competitor} and patients == [competitor]
