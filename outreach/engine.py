"""The ladder: a referral that becomes contactable starts a plan (the rungs of the ladder version
chosen for it), each rung is a work item due at its offset, and each rung runs through the rule
engine like any message. Stops when the referral is booked or closed, the patient replied or
opted out; the coordinator call task's outcome feeds back into the plan.

Work kinds: outreach.start, outreach.rung, outreach.stop, outreach.task-outcome (and
outreach.message, the cross-adapter kind, in handle_message).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from outreach import fhir, ladders
from outreach.contacts import contact_points
from outreach.delivery import CHECK_DELIVERY, TASK_OUTCOME_KIND, MessageAsk, deliver, record_attempt
from outreach.rules import consent_state
from outreach.runtime import Runtime
from outreach.store import Message, Plan
from outreach.timezones import resolve
from referrals.errors import IllegalTransition, RetryLater
from referrals.lifecycle import TABLE, Transition
from referrals.model import Actor, Command, Reason, Referral, Stage
from referrals.store.work import WorkItem

log = logging.getLogger("refloop.outreach")

ACTOR = Actor("Device/refloop-outreach", "Refloop outreach")
START_ACTIONS = {"detected": "detect", "accepted": "accept", "authorized": "authorize"}
CALL_OUTCOMES = ["reached", "left-voicemail", "wrong-number", "declined"]
REPLY_OUTCOMES = ["resume-outreach", "stop-outreach"]
LINK_OUTCOMES = ["link-sent", "booked", "unreachable"]


def on_transition(rt: Runtime, conn: Connection, change: Transition) -> None:
    """Referral listener (same transaction): start outreach when the referral becomes
    contactable; stop it when the referral is booked or finished."""
    event, referral = change.event, change.referral
    if _starts(rt, event.action):
        rt.work.enqueue("outreach.start", {"referral_id": referral.id,
                                           "at": event.at.isoformat(),
                                           "trigger": event.action},
                        key=f"outreach.start:{referral.id}:{event.seq}", conn=conn)
        return
    if event.from_stage == referral.stage:
        return
    if (referral.stage == Stage.SCHEDULED or referral.terminal) and \
            rt.ostore.has_active_plan(conn, referral.id):
        why = "booked" if referral.stage == Stage.SCHEDULED else "closed"
        rt.work.enqueue("outreach.stop", {"referral_id": referral.id, "reason": why},
                        key=f"outreach.stop:{referral.id}:{event.seq}", conn=conn)


#: with an authorization gate, a ladder starting at one of these also looks at the other
GATED = frozenset({"accept", "authorize"})
#: how long a start waits for the coverage check before going ahead without it
GATE_PATIENCE = timedelta(minutes=10)


def _starts(rt: Runtime, action: str) -> bool:
    start = START_ACTIONS[rt.config.start_on]
    return action == start or (rt.authorization_gate is not None and start in GATED
                               and action in GATED)


def _waits_for_authorization(rt: Runtime, item: WorkItem, referral: Referral) -> bool:
    """At `accept`, a referral whose prior authorization is required starts at `authorize`
    instead; while the coverage check has not answered, the start is postponed a little."""
    if rt.authorization_gate is None or item.payload.get("trigger") != "accept":
        return False
    gate = rt.authorization_gate(referral.id)
    started = datetime.fromisoformat(item.payload["at"]) if item.payload.get("at") \
        else rt.now()
    if gate.get("pending") and rt.now() - started < GATE_PATIENCE:
        raise RetryLater("waiting for the coverage check (is authorization required?)",
                         delay_seconds=60)
    if gate.get("requirement") == "required":
        log.info("outreach waits for authorization", extra={"referral_id": referral.id})
        return True
    return False


def handle_start(rt: Runtime, item: WorkItem) -> None:
    referral = rt.store.get(item.payload["referral_id"])
    if referral.terminal or _waits_for_authorization(rt, item, referral):
        return
    if rt.authorization_gate is not None and rt.ostore.plans_for(referral.id):
        return  # started already (at accept; this is the authorize that followed)
    started = datetime.fromisoformat(item.payload["at"]) if item.payload.get("at") \
        else rt.now()
    patient = rt.ostore.patient(referral.patient)
    _contacts, phone_zones = contact_points(patient, rt.config.default_region, rt.now())
    zone = resolve(patient, phone_zones, rt.config.default_time_zone).zones[0]
    ladder = ladders.choose(rt.config.ladders, referral.priority, referral.specialty,
                            referral.payer)
    now = rt.now()
    due_now = [i for i, r in enumerate(ladder.rungs) if r.due(started, zone) <= now]
    with rt.db.write() as c:
        plan = rt.ostore.create_plan(
            c, key=item.idempotency_key, referral_id=referral.id, patient=referral.patient,
            ladder=ladder.name, version=ladder.version,
            rungs=[r.to_json() for r in ladder.rungs], zone=zone, started_at=started)
        later = [i for i in range(len(ladder.rungs)) if i not in due_now]
        _enqueue_rungs(rt, c, plan, later, started, suffix="")
    log.info("outreach plan started", extra={"referral_id": referral.id, "plan": plan.id,
                                             "ladder": f"{ladder.name} v{ladder.version}"})
    for index in due_now:  # at once, in this item: a queue round-trip less to the first contact
        _run_now(rt, plan, index)


def _run_now(rt: Runtime, plan: Plan, index: int) -> None:
    """Run a rung due now inside the start item (a crash re-runs the start item, which finds
    the plan and the message by their keys); anything but success leaves it to its own work
    item, deferred or retried as usual."""
    key = f"outreach.rung:{plan.id}:{index}"
    payload = {"plan_id": plan.id, "rung": index}
    try:
        run_rung(rt, plan.id, index, key)
    except RetryLater as exc:
        rt.work.enqueue("outreach.rung", payload, key=key,
                        run_at=rt.now() + timedelta(seconds=exc.delay_seconds))
    except Exception:
        log.exception("a rung run at once failed; its work item retries it",
                      extra={"plan": plan.id, "rung": index})
        rt.work.enqueue("outreach.rung", payload, key=key, run_at=rt.now())


def _enqueue_rungs(rt: Runtime, c: Connection, plan: Plan, indexes: Any, start: datetime,
                   suffix: str) -> None:
    for index in indexes:
        rung = ladders.Rung.from_json(plan.rungs[index])
        rt.work.enqueue("outreach.rung", {"plan_id": plan.id, "rung": index},
                        key=f"outreach.rung:{plan.id}:{index}{suffix}",
                        run_at=rung.due(start, plan.zone), conn=c)


def handle_rung(rt: Runtime, item: WorkItem) -> None:
    run_rung(rt, item.payload["plan_id"], int(item.payload["rung"]), item.idempotency_key)


def run_rung(rt: Runtime, plan_id: str, index: int, key: str) -> None:
    plan = rt.ostore.plan(plan_id)
    if plan is None or index >= len(plan.rungs) or str(index) in plan.done:
        return
    if plan.status != "active":
        with rt.db.write() as c:
            rt.ostore.mark_rung(c, plan, index, f"not run: outreach {plan.status}"
                                f" ({plan.stop_reason})", rt.now())
        return
    referral = rt.store.get(plan.referral_id)
    stop = _stop_reason(rt, referral, plan)
    if stop:
        stop_plan(rt, plan, stop)
        return
    rung = ladders.Rung.from_json(plan.rungs[index])
    if rung.channel == "task":
        _open_call_task(rt, plan, index, referral)
    elif rung.channel == "fail":
        _fail_unreachable(rt, plan, index, referral)
    else:
        outcome = deliver(rt, key, MessageAsk(
            referral_id=referral.id, purpose=rung.template, channels=(rung.channel,),
            window=rung.window, plan_id=plan.id, rung=index, lifecycle=True))
        with rt.db.write() as c:
            what = outcome.message.rule if outcome.message and outcome.status not in (
                "sent", "unknown") else outcome.status.replace("unknown", "delivery unknown")
            rt.ostore.mark_rung(c, plan, index, f"{rung.channel}: {what}", rt.now())


def _stop_reason(rt: Runtime, referral: Referral, plan: Plan) -> str:
    stop_on = set(ladders.STOP_ON)
    if referral.terminal and "closed" in stop_on:
        return f"referral {referral.stage.value}"
    if (referral.stage == Stage.SCHEDULED or any(o.is_a("appointment")
                                                  for o in referral.outputs)) \
            and "booked" in stop_on:
        return "booked"
    events = [(e["at"], e["channel"], e["kind"]) for e in rt.ostore.consent_events(
        referral.patient)]
    if {"sms", "voice", "email"} <= consent_state(events):
        return "opted out of every channel"
    return ""


def stop_plan(rt: Runtime, plan: Plan, reason: str, *, status: str = "stopped") -> None:
    with rt.db.write() as c:
        rt.ostore.update_plan(c, plan.id, rt.now(), status=status, stop_reason=reason)
        if status == "stopped":
            rt.tasks.cancel_open(plan.referral_id, ACTOR.reference,
                                 f"outreach stopped: {reason}", kind="call-patient", conn=c)
    log.info("outreach plan stopped", extra={"referral_id": plan.referral_id, "plan": plan.id,
                                             "why": reason})


def handle_stop(rt: Runtime, item: WorkItem) -> None:
    for plan in rt.ostore.plans_for(item.payload["referral_id"]):
        if plan.status in ("active", "paused"):
            stop_plan(rt, plan, item.payload.get("reason", "stopped"))


def _open_call_task(rt: Runtime, plan: Plan, index: int, referral: Referral) -> None:
    tried = ", ".join(f"{k}: {v}" for k, v in sorted(plan.done.items())) or "nothing yet"
    points, _zones = contact_points(rt.ostore.patient(referral.patient),
                                    rt.config.default_region, rt.now())
    phones = [p.address for p in points if p.channel == "voice" and p.usable]
    with rt.db.write() as c:
        rt.tasks.open(referral.id, "call-patient",
                      f"No answer to automatic outreach ({tried}); please call the patient",
                      due_at=rt.now() + timedelta(hours=8), outcomes=CALL_OUTCOMES,
                      on_outcome=TASK_OUTCOME_KIND, key=f"outreach.task:{plan.id}:{index}",
                      data={"plan_id": plan.id, "rung": index,
                            "address": phones[0] if phones else ""}, conn=c)
        rt.ostore.mark_rung(c, plan, index, "task: opened", rt.now())


def _fail_unreachable(rt: Runtime, plan: Plan, index: int, referral: Referral) -> None:
    with rt.db.write() as c:
        if not referral.terminal:
            rt.referrals.act(referral.id, Command(
                "fail", actor=ACTOR, at=rt.now(), source="outreach",
                reason=Reason("unreachable", f"no answer to the {plan.ladder} ladder "
                              f"(v{plan.ladder_version})")), conn=c)
        rt.ostore.mark_rung(c, plan, index, "fail: unreachable", rt.now())
        rt.ostore.update_plan(c, plan.id, rt.now(), status="finished",
                              stop_reason="unreachable")


def handle_message(rt: Runtime, item: WorkItem) -> None:
    """`outreach.message`: any adapter's message to a patient, under every rule."""
    deliver(rt, item.idempotency_key, MessageAsk.from_payload(item.payload))


def handle_task_outcome(rt: Runtime, item: WorkItem) -> None:
    """A coordinator recorded the outcome of a task outreach opened: feed it to the ladder."""
    payload = item.payload
    data = payload.get("data") or {}
    plan = rt.ostore.plan(str(data.get("plan_id", ""))) if data.get("plan_id") else None
    outcome, kind = payload["outcome"], payload["kind"]
    actor = Actor(payload.get("actor") or ACTOR.reference, payload.get("actor_display", ""),
                  "human")
    now = rt.now()
    with rt.db.write() as c:
        referral = rt.store.get(payload["referral_id"], c)
        if kind == "call-patient":
            _record_call(rt, c, referral, outcome, payload.get("note", ""), actor, now)
            if outcome == "wrong-number" and data.get("address"):
                for channel in ("voice", "sms"):
                    rt.ostore.mark_failing(c, data["address"], channel, "wrong-number",
                                           "a coordinator reached a wrong number", now)
        elif kind == CHECK_DELIVERY and data.get("message_id"):
            _record_check(rt, c, referral, str(data["message_id"]), outcome, now)
        if plan is not None and data.get("rung") is not None:
            rt.ostore.mark_rung(c, plan, int(data["rung"]), f"task: {outcome}", now)
    if plan is None:
        return
    if outcome in ("reached", "declined", "booked", "stop-outreach"):
        stop_plan(rt, plan, f"{kind}: {outcome}")
    elif outcome == "resume-outreach":
        resume_plan(rt, plan)


def _record_check(rt: Runtime, c: Connection, referral: Referral, message_id: str,
                  outcome: str, now: datetime) -> None:
    """A coordinator checked a message whose delivery was unknown: received or not."""
    message = rt.ostore.message(message_id, c)
    if message is None or message.status != "unknown":
        return
    received = outcome == "received"
    status = "delivered" if received else "not-done"
    why = f"checked with the patient by a coordinator: {outcome}"
    rt.ostore.update_message(c, message.id, status=status, reason=why, updated_at=now)
    rt.resources.put(fhir.communication(
        communication_id=message.id, request_id=message.id, referral=referral,
        purpose=message.purpose, channel=message.channel,
        status="completed" if received else "not-done", sent=message.sent_at,
        received=now if received else None, status_reason="" if received else "undeliverable",
        reason_text="" if received else why,
        text=message.body if message.channel != "email" else message.subject), conn=c)


def _record_call(rt: Runtime, c: Connection, referral: Referral, outcome: str, note: str,
                 actor: Actor, now: datetime) -> None:
    if referral.stage in TABLE["start-outreach"].sources:
        referral = rt.referrals.act(referral.id, Command("start-outreach", actor=actor, at=now,
                                                         source="outreach"), conn=c)
    if referral.stage in TABLE["record-outreach"].sources:
        rt.referrals.act(referral.id, Command(
            "record-outreach", actor=actor, at=now, source="outreach",
            reason=Reason(outcome, f"phone call by a coordinator{': ' + note if note else ''}")),
            conn=c)


def pause_plan(rt: Runtime, referral_id: str, reason: str) -> None:
    for plan in rt.ostore.plans_for(referral_id):
        if plan.status == "active":
            with rt.db.write() as c:
                rt.ostore.update_plan(c, plan.id, rt.now(), status="paused", stop_reason=reason)


def resume_plan(rt: Runtime, plan: Plan) -> None:
    """A person resumed the ladder: the rungs not yet run are planned again from now, keeping
    their spacing."""
    fresh = rt.ostore.plan(plan.id) or plan
    waiting = [i for i in range(len(fresh.rungs)) if str(i) not in fresh.done
               or fresh.done[str(i)].startswith("not run")]
    if not waiting:
        return
    first_offset = ladders.Rung.from_json(fresh.rungs[waiting[0]]).after
    restart = rt.now() - first_offset
    with rt.db.write() as c:
        done = {k: v for k, v in fresh.done.items() if not v.startswith("not run")}
        rt.ostore.update_plan(c, plan.id, rt.now(), status="active", stop_reason="", done=done)
        fresh = Plan(**{**fresh.__dict__, "done": done, "status": "active"})
        _enqueue_rungs(rt, c, fresh, waiting, restart,
                       suffix=f":resumed-{int(rt.now().timestamp())}")


def record_first_contact(rt: Runtime, c: Connection, referral_id: str, message: Message,
                         now: datetime) -> None:
    record_attempt(rt, c, referral_id, message, rt.ostore.sent_count(referral_id, c) == 0, now)


def act_quietly(rt: Runtime, c: Connection, referral_id: str, command: Command) -> None:
    """Apply a lifecycle command when the stage allows it (outreach never forces a stage)."""
    try:
        rt.referrals.act(referral_id, command, conn=c)
    except IllegalTransition:
        log.info("lifecycle move not allowed here; not applied",
                 extra={"referral_id": referral_id, "action": command.action})
