"""What `refloop outreach plan` and `optouts` show: the ladder a referral is on, what each rung
did, what happens next and why (the rule engine asked about the next rung's due time), and the
current opt-outs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from outreach import ladders
from outreach.delivery import MessageAsk, _decide, patient_view
from outreach.rules import SEND, consent_state
from outreach.runtime import Runtime


def explain(rt: Runtime, referral_id: str) -> dict[str, Any]:
    referral = rt.store.get(referral_id)
    plans = rt.ostore.plans_for(referral_id)
    if not plans:
        trigger = {"detected": "is detected", "accepted": "is accepted",
                   "authorized": "is authorized"}[rt.config.start_on]
        chosen = ladders.choose(rt.config.ladders, referral.priority, referral.specialty,
                                referral.payer)
        return {"referral_id": referral_id, "plan": None, "rungs": [],
                "summary": f"Referral {referral_id}: no outreach yet ({referral.stage.value}). "
                           f"It starts when the referral {trigger}, on ladder {chosen.name} "
                           f"v{chosen.version}.",
                "next": "Outreach is " + ("enabled." if rt.config.enabled else
                                          "disabled: configure [outreach] to enable it.")}
    plan = plans[-1]
    rows = []
    for index, data in enumerate(plan.rungs):
        rung = ladders.Rung.from_json(data)
        rows.append({"index": index, "channel": rung.channel, "template": rung.template,
                     "due": rung.due(plan.started_at, plan.zone).astimezone(UTC).isoformat(),
                     "state": plan.done.get(str(index), "waiting")})
    summary = (f"Referral {referral_id} ({referral.priority}, {referral.stage.value}): ladder "
               f"{plan.ladder} v{plan.ladder_version}, started "
               f"{plan.started_at:%Y-%m-%d %H:%M} UTC, patient time zone {plan.zone}; "
               f"outreach {plan.status}" + (f" ({plan.stop_reason})" if plan.stop_reason
                                             else "") + ".")
    return {"referral_id": referral_id, "plan": plan.id, "ladder": plan.ladder,
            "version": plan.ladder_version, "status": plan.status, "rungs": rows,
            "summary": summary, "next": _next(rt, plan, rows, referral_id)}


def _next(rt: Runtime, plan: Any, rows: list[dict[str, Any]], referral_id: str) -> str:
    if plan.status != "active":
        return f"Next: nothing automatic (outreach {plan.status})."
    waiting = [r for r in rows if r["state"] == "waiting"]
    if not waiting:
        return "Next: nothing; every rung has run."
    row = min(waiting, key=lambda r: r["due"])
    due = datetime.fromisoformat(row["due"])
    if row["channel"] in ("task", "fail"):
        what = "a coordinator call task" if row["channel"] == "task" else \
            "the referral fails as unreachable"
        return f"Next: {what} at {due:%Y-%m-%d %H:%M} UTC."
    rung = ladders.Rung.from_json(plan.rungs[row["index"]])
    at = max(due, rt.now())
    referral = rt.store.get(referral_id)
    view = patient_view(rt, rt.ostore.patient(referral.patient), at)
    decision = _decide(rt, referral, view, MessageAsk(
        referral_id, rung.template, (rung.channel,), window=rung.window, plan_id=plan.id,
        rung=row["index"]), at)
    verdict = "send" if decision.outcome == SEND else decision.outcome
    return (f"Next: rung {row['index'] + 1}, {rung.channel} ({rung.template}) due "
            f"{due:%Y-%m-%d %H:%M} UTC: would {verdict} [{decision.rule}] {decision.reason}.")


def current_optouts(rt: Runtime) -> list[dict[str, Any]]:
    events = rt.ostore.consent_events()
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for event in events:
        groups.setdefault((event["patient"], event["address"]), []).append(event)
    found = []
    for (patient, address), group in sorted(groups.items()):
        out = consent_state((e["at"], e["channel"], e["kind"]) for e in group)
        for channel in sorted(out):
            last = [e for e in group if e["kind"] == "opt-out"
                    and e["channel"] in (channel, "all")][-1]
            found.append({"patient": patient, "address": address, "channel": channel,
                          "since": last["at"].isoformat(), "source": last["source"]})
    return found
