"""Coordinator tasks (services.tasks) on SQLite and PostgreSQL: idempotent open, outcomes that
enqueue the opener's work kind in the same commit, cancel, the open lists and the FHIR Task."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from referrals.coordinator import TaskError, to_fhir
from referrals.errors import NotFound
from referrals.model import Actor, Command, Referral, new_referral_id
from referrals.store.schema import work_items
from refloop.services import Services

CASEY = Actor("Practitioner/coord-1", "Casey Coordinator", "human")
OUTCOMES = ["reached", "left-voicemail", "wrong-number", "declined"]


def _referral(services: Services, key: str, patient: str = "Patient/p1") -> Referral:
    draft = Referral(id=new_referral_id(), source_key=f"t|ServiceRequest/{key}",
                     service_request=f"ServiceRequest/{key}", patient=patient)
    return services.referrals.open(draft, Command("detect"))[0]


def _work(services: Services, kind: str) -> list[dict]:
    with services.db.read() as c:
        return [dict(r) for r in c.execute(sa.select(work_items).where(
            work_items.c.kind == kind)).mappings()]


def test_open_is_idempotent_on_its_key_and_lists_open_tasks(services: Services) -> None:
    ref = _referral(services, "sr-1")
    due = datetime(2030, 1, 2, 9, tzinfo=UTC)
    first = services.tasks.open(ref.id, "call-patient", "no answer to SMS and voice",
                                due_at=due, outcomes=OUTCOMES, on_outcome="test.outcome",
                                key=f"call:{ref.id}:1", data={"rung": 4})
    again = services.tasks.open(ref.id, "call-patient", "a retry of the same decision",
                                due_at=due, outcomes=OUTCOMES, on_outcome="test.outcome",
                                key=f"call:{ref.id}:1")
    assert again == first
    later = services.tasks.open(ref.id, "chase-note", "consult note overdue", outcomes=["done"],
                                key=f"chase:{ref.id}")
    found = services.tasks.open_for(ref.id)
    assert [t.id for t in found] == [first, later]  # due first, undated last
    task = found[0]
    assert task.reason == "no answer to SMS and voice" and task.data == {"rung": 4}
    assert task.outcomes == tuple(OUTCOMES) and task.due_at == due and task.is_open
    assert [t.id for t in services.tasks.list_open(kind="chase-note")] == [later]
    assert services.tasks.count_open() == 2


def test_complete_enqueues_the_outcome_once_in_the_same_commit(services: Services) -> None:
    ref = _referral(services, "sr-2")
    task_id = services.tasks.open(ref.id, "call-patient", "call", outcomes=OUTCOMES,
                                  on_outcome="test.outcome", key="k-2", data={"rung": 4})
    done = services.tasks.complete(task_id, "left-voicemail", CASEY, "voicemail full")
    assert done.status == "completed" and done.outcome == "left-voicemail"
    assert done.actor == CASEY.reference and done.note == "voicemail full"
    assert services.tasks.open_for(ref.id) == []
    # a double submit of the same outcome changes nothing and enqueues nothing more
    assert services.tasks.complete(task_id, "left-voicemail", CASEY).outcome == "left-voicemail"
    items = _work(services, "test.outcome")
    assert len(items) == 1
    assert items[0]["payload"] == {"task_id": task_id, "referral_id": ref.id,
                                   "kind": "call-patient", "outcome": "left-voicemail",
                                   "note": "voicemail full", "actor": CASEY.reference,
                                   "actor_display": CASEY.display, "data": {"rung": 4}}
    with pytest.raises(TaskError, match="already completed"):
        services.tasks.complete(task_id, "reached", CASEY)


def test_outcome_must_be_one_the_task_offers(services: Services) -> None:
    ref = _referral(services, "sr-3")
    task_id = services.tasks.open(ref.id, "call-patient", "call", outcomes=OUTCOMES,
                                  on_outcome="test.outcome", key="k-3")
    with pytest.raises(TaskError, match="not an outcome"):
        services.tasks.complete(task_id, "booked-a-flight", CASEY)
    with pytest.raises(NotFound):
        services.tasks.complete("no-such-task", "reached", CASEY)
    assert services.tasks.get(task_id).is_open and _work(services, "test.outcome") == []


def test_a_failing_caller_transaction_leaves_neither_outcome_nor_work(services: Services) -> None:
    ref = _referral(services, "sr-4")
    task_id = services.tasks.open(ref.id, "call-patient", "call", outcomes=OUTCOMES,
                                  on_outcome="test.outcome", key="k-4")
    with pytest.raises(RuntimeError), services.db.write() as c:
        services.tasks.complete(task_id, "reached", CASEY, conn=c)
        raise RuntimeError("the caller's transaction fails after the outcome")
    assert services.tasks.get(task_id).is_open and _work(services, "test.outcome") == []


def test_cancel_and_cancel_open(services: Services) -> None:
    ref = _referral(services, "sr-5")
    other = _referral(services, "sr-6", patient="Patient/p2")
    one = services.tasks.open(ref.id, "call-patient", "a", outcomes=OUTCOMES, key="k-5a")
    two = services.tasks.open(ref.id, "read-reply", "b", outcomes=["handled"], key="k-5b")
    three = services.tasks.open(other.id, "call-patient", "c", outcomes=OUTCOMES, key="k-6")
    cancelled = services.tasks.cancel(one, "Device/refloop", "booked online")
    assert cancelled.status == "cancelled" and cancelled.outcome is None
    assert services.tasks.cancel(one, "Device/refloop").status == "cancelled"
    assert services.tasks.cancel_open(ref.id, "Device/refloop", "referral closed") == 1
    assert services.tasks.get(two).status == "cancelled"
    assert [t.id for t in services.tasks.list_open()] == [three]
    assert [t.id for t in services.tasks.list_open(patient="Patient/p2")] == [three]
    assert services.tasks.list_open(patient="Patient/p1") == []
    with pytest.raises(TaskError, match="already cancelled"):
        services.tasks.complete(one, "reached", CASEY)
    assert [t.id for t in services.tasks.for_referral(ref.id)] == [one, two]


def test_fhir_task_is_part_of_the_referral_and_coded_by_kind(services: Services) -> None:
    ref = _referral(services, "sr-7")
    due = datetime.now(UTC) + timedelta(hours=24)
    task_id = services.tasks.open(ref.id, "call-patient", "no answer", due_at=due,
                                  outcomes=OUTCOMES, key="k-7")
    resource = to_fhir(services.tasks.get(task_id))
    assert resource["resourceType"] == "Task" and resource["status"] == "ready"
    assert resource["partOf"] == [{"reference": f"Task/{ref.id}"}]
    assert resource["code"]["coding"][0]["code"] == "call-patient"
    assert resource["intent"] == "order" and resource["description"] == "no answer"
    assert [i["valueCodeableConcept"]["coding"][0]["code"] for i in resource["input"]] == OUTCOMES
    done = to_fhir(services.tasks.complete(task_id, "reached", CASEY, "booked by phone"))
    assert done["status"] == "completed"
    assert done["businessStatus"]["coding"][0]["code"] == "reached"
    assert done["owner"] == {"reference": CASEY.reference, "display": CASEY.display}
    assert done["note"] == [{"text": "booked by phone"}]


def test_referrals_show_lists_the_tasks(services: Services, tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from refloop.cli import main

    ref = _referral(services, "sr-8")
    task_id = services.tasks.open(ref.id, "call-patient", "no answer", outcomes=OUTCOMES,
                                  key="k-8")
    config = tmp_path / "refloop.toml"
    config.write_text(f'database_url = "{services.settings.database_url}"\n'
                      f'var_dir = "{tmp_path / "var"}"\n')
    shown = CliRunner().invoke(main, ["--config", str(config), "referrals", "show", ref.id])
    assert shown.exit_code == 0, shown.output
    assert "Coordinator tasks" in shown.output and "call-patient" in shown.output
    as_json = CliRunner().invoke(main, ["--config", str(config), "referrals", "show", ref.id,
                                        "--json"])
    assert [t["id"] for t in json.loads(as_json.output)["coordinator_tasks"]] == [task_id]
