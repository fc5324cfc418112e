"""The store on SQLite and PostgreSQL: idempotent open, optimistic concurrency, the append-only
event log, resource versioning, inbox dedupe, quarantine, and UTC round trips."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from fhir.resources.R4B.provenance import Provenance
from fhir.resources.R4B.task import Task

from referrals.errors import ConflictError, IllegalTransition, NotFound
from referrals.lifecycle import transition
from referrals.model import Actor, Command, Reason, Referral, Stage, new_referral_id
from referrals.store import referrals as store_referrals
from referrals.store.database import WAL_AUTOCHECKPOINT_PAGES
from referrals.store.schema import referral_events
from referrals.task import to_task
from refloop.services import Services, build_services
from refloop.settings import Settings

NURSE = Actor("Practitioner/n1", "Nurse One", "human")


def open_referral(services: Services, key: str = "ehr|ServiceRequest/1", **fields: str
                  ) -> Referral:
    draft = Referral(id=new_referral_id(), source_key=key, service_request="ServiceRequest/1",
                     patient="Patient/1", **fields)
    referral, created = services.referrals.open(draft, Command("detect", source="fhir:ehr"))
    assert created
    return referral


def test_open_is_idempotent_on_source_key(services: Services) -> None:
    first = open_referral(services)
    again, created = services.referrals.open(
        Referral(id=new_referral_id(), source_key=first.source_key,
                 service_request="ServiceRequest/1", patient="Patient/1"), Command("detect"))
    assert not created and again.id == first.id
    assert len(services.store.events(first.id)) == 1
    assert len(services.store.list()) == 1


def test_open_racing_threads_create_one_referral(services: Services) -> None:
    results: list[bool] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def racer() -> None:
        try:
            barrier.wait()
            _ref, created = services.referrals.open(
                Referral(id=new_referral_id(), source_key="race|1",
                         service_request="ServiceRequest/r", patient="Patient/r"),
                Command("detect"))
            results.append(created)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=racer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and sorted(results) == [False, False, False, True]
    assert len(services.store.list()) == 1


def test_stale_writer_gets_a_conflict(services: Services) -> None:
    referral = open_referral(services)
    mine = transition(services.store.get(referral.id), Command("accept", actor=NURSE))
    theirs = transition(services.store.get(referral.id), Command("triage"))
    services.store.save(theirs)
    with pytest.raises(ConflictError) as caught:
        services.store.save(mine)
    assert caught.value.expected == 1 and caught.value.found == 2
    assert "reload it and try again" in str(caught.value)
    stored = services.store.get(referral.id)
    assert stored.stage == Stage.TRIAGE and stored.version == 2
    assert [e.action for e in services.store.events(referral.id)] == ["detect", "triage"]


def test_act_with_expected_version(services: Services) -> None:
    referral = open_referral(services)
    services.referrals.act(referral.id, Command("triage"), expected_version=1)
    with pytest.raises(ConflictError):
        services.referrals.act(referral.id, Command("accept"), expected_version=1)
    accepted = services.referrals.act(referral.id, Command("accept"), expected_version=2)
    assert accepted.version == 3 and accepted.stage == Stage.ACCEPTED
    with pytest.raises(IllegalTransition, match="cannot triage"):
        services.referrals.act(referral.id, Command("triage"))
    with pytest.raises(NotFound):
        services.referrals.act("no-such-id", Command("accept"))
    assert services.store.get(referral.id).version == 3


def test_concurrent_act_without_expected_version_applies_both(services: Services) -> None:
    referral = open_referral(services)
    services.referrals.act(referral.id, Command("accept"))
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def assign(owner: str) -> None:
        try:
            barrier.wait()
            for n in range(5):
                services.referrals.act(referral.id, Command(
                    "assign", changes={"owner": f"{owner}-{n}"}))
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=assign, args=(o,)) for o in ("A", "B")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    events = services.store.events(referral.id)
    assert [e.seq for e in events] == list(range(1, 13))
    assert services.store.get(referral.id).version == 12


@pytest.mark.parametrize("statement", [
    "UPDATE referral_events SET action = 'forged'",
    "DELETE FROM referral_events",
])
def test_event_log_is_append_only(services: Services, statement: str) -> None:
    referral = open_referral(services)
    services.referrals.act(referral.id, Command("accept"))
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), services.db.write() as c:
        c.execute(sa.text(statement))
    assert [e.action for e in services.store.events(referral.id)] == ["detect", "accept"]
    with services.db.write() as c:  # inserting still works
        c.execute(referral_events.insert().values(
            referral_id=referral.id, seq=99, action="note", to_stage="accepted", actor="x",
            at=datetime.now(UTC), data={}, provenance={}))


def test_task_and_provenance_in_the_store_validate(services: Services) -> None:
    referral = open_referral(services, requester="Practitioner/9", priority="asap")
    for action, reason in [("accept", None), ("schedule", None),
                           ("hold", Reason("patient-travel", "Patient abroad")),
                           ("resume", None), ("complete-visit", None), ("close-loop", None)]:
        services.referrals.act(referral.id, Command(action, actor=NURSE, reason=reason,
                                                    source="ui", source_message=action))
    task = services.store.task(referral.id)
    assert task == to_task(services.store.get(referral.id))
    Task.model_validate(task)
    assert task["status"] == "completed" and task["meta"]["versionId"] == "7"
    provenance = services.store.provenance(referral.id)
    assert len(provenance) == 7
    for entry in provenance:
        Provenance.model_validate(entry)
    assert provenance[3]["reason"][0]["coding"][0]["code"] == "patient-travel"
    events = services.store.events(referral.id)
    assert events[3].actor == NURSE and events[3].reason == Reason("patient-travel",
                                                                    "Patient abroad")
    assert events[3].at.tzinfo is not None


def test_resource_versions(services: Services) -> None:
    resources = services.resources
    sr = {"resourceType": "ServiceRequest", "id": "sr1", "meta": {"versionId": "1"},
          "status": "active"}
    assert resources.put(sr, server="ehr") == 1
    assert resources.put(dict(sr), server="ehr") == 1  # redelivered: nothing stored
    assert resources.put({**sr, "status": "on-hold"}, server="ehr") == 1  # same remote version
    changed = {**sr, "meta": {"versionId": "2"}, "status": "completed"}
    assert resources.put(changed, server="ehr") == 2
    assert resources.put(changed, server="ehr") == 2
    assert resources.try_get("ServiceRequest", "sr1", server="ehr") == changed
    assert resources.try_get("ServiceRequest", "sr1") is None  # other server namespace
    assert resources.delete("ServiceRequest", "sr1", server="ehr") == 3
    assert resources.delete("ServiceRequest", "sr1", server="ehr") == 3
    assert resources.try_get("ServiceRequest", "sr1", server="ehr") is None
    assert resources.delete("ServiceRequest", "never", server="ehr") is None
    back = {**sr, "meta": {"versionId": "4"}, "status": "active"}
    assert resources.put(back, server="ehr") == 4
    history = resources.history("ServiceRequest", "sr1", server="ehr")
    assert [(h["version"], h["remote_version"], h["deleted"]) for h in history] == [
        (1, "1", False), (2, "2", False), (3, None, True), (4, "4", False)]
    assert history[0]["body"] == sr and history[2]["body"] is None
    local = {"resourceType": "Patient", "id": "p1", "active": True}
    assert resources.put(local) == 1 and resources.put(dict(local)) == 1
    assert resources.put({**local, "active": False}) == 2


def test_inbox_dedupe_stores_once_and_enqueues_once(services: Services) -> None:
    body = b'{"resourceType":"Bundle"}\xff\x00'
    first = services.inbox.accept("rest-hook", "ehr", body, work_kind="test.notify",
                                  content_type="application/fhir+json",
                                  headers={"X-Event": "1"}, dedupe_key="ehr:sub1:1")
    second = services.inbox.accept("rest-hook", "ehr", b"other", work_kind="test.notify",
                                   dedupe_key="ehr:sub1:1")
    assert not first.duplicate and second.duplicate and second.inbox_id == first.inbox_id
    message = services.inbox.get(first.inbox_id)
    assert message.body == body and message.headers == {"X-Event": "1"}
    assert message.status == "received" and message.received_at.tzinfo is not None
    assert services.work.counts() == {"pending": 1}
    third = services.inbox.accept("rest-hook", "ehr", body, work_kind="test.notify")
    assert not third.duplicate  # no key, no dedupe
    assert services.work.counts() == {"pending": 2}
    services.inbox.mark(first.inbox_id, "processed", "ok")
    assert services.inbox.get(first.inbox_id).status == "processed"


def test_quarantine_keeps_reason_and_original_bytes(services: Services) -> None:
    raw = b"MSH|^~\\&|BAD\r\x00\x01"
    rejected = services.inbox.reject("mllp", "clinic-a", raw, "MSH-9 is missing",
                                     content_type="x-application/hl7-v2+er7")
    message = services.inbox.get(rejected)
    assert message.status == "rejected" and message.note == "MSH-9 is missing"
    stored = services.inbox.accept("rest-hook", "ehr", b'{"x":1}', work_kind=None,
                                   content_type="application/json")
    entry_id = services.inbox.quarantine_message(stored.inbox_id, "no ServiceRequest in it")
    entries = {e.id: e for e in services.quarantine.list()}
    assert set(entries) == {entry_id, entry_id - 1}
    first = entries[entry_id - 1]
    assert (first.origin, first.kind, first.reason, first.original, first.content_type,
            first.inbox_id) == ("inbox", "mllp", "MSH-9 is missing", raw,
                                "x-application/hl7-v2+er7", rejected)
    second = entries[entry_id]
    assert second.original == b'{"x":1}' and second.inbox_id == stored.inbox_id
    assert services.inbox.get(stored.inbox_id).status == "quarantined"
    assert second.created_at.tzinfo is not None
    assert services.quarantine.resolve(entry_id)
    assert [e.id for e in services.quarantine.list()] == [entry_id - 1]
    assert len(services.quarantine.list(include_resolved=True)) == 2


def test_cursors(services: Services) -> None:
    assert services.cursors.try_get("ehr:_lastUpdated") is None
    services.cursors.set("ehr:_lastUpdated", "2026-01-01T00:00:00Z")
    services.cursors.set("ehr:_lastUpdated", "2026-01-02T00:00:00Z")
    assert services.cursors.try_get("ehr:_lastUpdated") == "2026-01-02T00:00:00Z"


def test_times_round_trip_as_utc_whatever_the_session_time_zone(
        database_url: str, tmp_path) -> None:
    """Times written with an offset come back as the same instant, in UTC, on both databases;
    on PostgreSQL the database's time zone is set to New York to prove it."""
    if database_url.startswith("postgresql"):
        name = database_url.rsplit("/", 1)[1]
        admin = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"),
                                 isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text(f"ALTER DATABASE {name} SET timezone TO 'America/New_York'"))
        admin.dispose()
    services = build_services(Settings(var_dir=tmp_path / "var", database_url=database_url))
    try:
        if database_url.startswith("postgresql"):
            with services.db.read() as c:
                assert c.execute(sa.text("SHOW timezone")).scalar() == "America/New_York"
        eastern = timezone(timedelta(hours=-5))
        at = datetime(2026, 1, 15, 7, 0, 0, 250000, tzinfo=eastern)
        referral = open_referral(services, key=f"tz|{uuid.uuid4()}")
        services.referrals.act(referral.id, Command("accept", at=at))
        events = services.store.events(referral.id)
        assert events[1].at == at and events[1].at.utcoffset() == timedelta(0)
        from referrals.store.schema import referrals as table
        with services.db.read() as c:
            updated = c.execute(sa.select(table.c.updated_at)
                                .where(table.c.id == referral.id)).scalar_one()
        assert updated == at and updated.tzinfo is not None and updated.utcoffset() == timedelta(0)
        task = services.store.task(referral.id)
        assert task["meta"]["lastUpdated"] == "2026-01-15T12:00:00.250Z"
        item = services.work.enqueue("test.tz", {}, key="tz", run_at=at)
        assert services.work.try_get(item)["run_at"] == at
        assert [i.id for i in services.work.claim("w", kinds=["test.tz"])] == [item]
    finally:
        services.close()


def test_checkpoint_copies_the_log_into_the_database_file(services: Services,
                                                           tmp_path: Path) -> None:
    """SQLite: a referral just committed sits in the write-ahead log (commits checkpoint only
    past WAL_AUTOCHECKPOINT_PAGES); after `checkpoint()` the database file alone holds it.
    PostgreSQL has nothing to do and must not fail."""
    referral = open_referral(services, key=f"ckpt|{uuid.uuid4()}")
    services.db.checkpoint()
    if not services.db.is_sqlite:
        return
    path = Path(services.db.engine.url.database or "")
    alone = tmp_path / "alone.db"  # the main file copied without its -wal
    alone.write_bytes(path.read_bytes())
    conn = sqlite3.connect(alone)
    try:
        found = conn.execute("SELECT count(*) FROM referrals WHERE id = ?",
                             (referral.id,)).fetchone()[0]
    finally:
        conn.close()
    assert found == 1
    with services.db.read() as c:
        assert c.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == \
            WAL_AUTOCHECKPOINT_PAGES


def test_database_errors_never_carry_the_statements_values(database_url: str) -> None:
    """A failed statement's error (logged with its traceback) names the SQL, not its values:
    they hold patient references and free text."""
    from referrals.store.database import connect
    db = connect(database_url)
    try:
        with pytest.raises(sa.exc.DBAPIError) as failed, db.engine.connect() as conn:
            conn.execute(sa.text("SELECT :patient FROM no_such_table"), {"patient": "Patient/p-42"})
        assert "Patient/p-42" not in str(failed.value)
    finally:
        db.engine.dispose()


def test_inbox_keys_too_long_or_with_a_nul_are_stored_and_still_deduplicate(
        services: Services) -> None:
    """A sender's id of any length goes into a key (a Twilio MessageSid of 100,000 characters
    answered 500 on PostgreSQL, SQLite stored it whole)."""
    for key in ("twilio-sms:" + "x" * 100_000, "twilio-status:SMzz:\x00"):
        first = services.inbox.accept("t", "s", b"a", work_kind=None, dedupe_key=key)
        again = services.inbox.accept("t", "s", b"a", work_kind=None, dedupe_key=key)
        assert not first.duplicate and again.duplicate and again.inbox_id == first.inbox_id
    other = services.inbox.accept("t", "s", b"b", work_kind=None,
                                  dedupe_key="twilio-sms:" + "x" * 99_999 + "y")
    assert not other.duplicate


def test_unmatched_sources_are_the_sources_no_referral_came_from(
        services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenant's source matches a referral's source key up to the next `|`, case and all; on
    PostgreSQL the same when the database's collation does not order by code point (the range
    is then compared in C)."""
    open_referral(services, "hl7|NORTH|MSG-1")
    open_referral(services, "fhir|https://ehr.example/fhir|ServiceRequest/1")
    sources = ["hl7|NORTH", "hl7|north", "hl7|NORT", "fhir|https://ehr.example/fhir",
               "fhir|https://ehr.example", "hl7|NORTH|MSG", "demo", "hl7|NORTH%", "hl7|NORTH_"]
    for forced in (None, False) if services.db.dialect == "postgresql" else (None,):
        if forced is not None:  # as if the collation were en_US.UTF-8
            monkeypatch.setattr(store_referrals, "_orders_by_code_point", lambda conn: False)
        assert services.store.unmatched_sources(sources) == [
            "hl7|north", "hl7|NORT", "fhir|https://ehr.example", "hl7|NORTH|MSG", "demo",
            "hl7|NORTH%", "hl7|NORTH_"], forced
    assert services.store.unmatched_sources([]) == []
