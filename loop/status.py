"""What the loop did for one referral, and the clocks still running: for `refloop loop status`,
`refloop loop clocks`, `refloop referrals show` and the referral page."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from loop.adapter import LoopAdapter
from loop.clocks import CLOCK_KIND, DUE
from referrals.store.schema import work_items


def status_of(adapter: LoopAdapter, referral_id: str) -> dict[str, Any]:
    """The chase, the updates, the deliveries and the clocks of a referral; `rows` is the same
    as a table of (what, state, detail). Raises NotFound for an unknown referral."""
    referral = adapter.core.store.get(referral_id)
    chase = adapter.chaser.get(referral_id)
    updates = adapter.referrers.of_referral(referral_id)
    deliveries = adapter.deliveries.of_referral(referral_id)
    rows: list[list[str]] = []
    if chase is not None:
        detail = f"{chase.steps_done} step(s), last {chase.last_step or '-'}; visit " \
                 f"{chase.visit_at:%Y-%m-%d}"
        if chase.stopped_by:
            detail += f"; stopped by {chase.stopped_by}"
        rows.append([f"chase ({chase.specialist or 'no specialist configured'})",
                     chase.status, detail])
    rows += [[f"update: {u.milestone}", "sent" if u.sent_at else "waiting",
              f"{u.channel} to {u.referrer}" + (f" {u.sent_at:%Y-%m-%d %H:%M}"
                                                 if u.sent_at else "")] for u in updates]
    rows += [[f"note to referrer: {d.document}", d.status,
              f"{d.channel} to {d.referrer}" + (f"; received {d.received_at:%Y-%m-%d %H:%M}"
                                                 if d.received_at else "")
              + (f"; {d.error}" if d.error else "")] for d in deliveries]
    rows += [[f"clock: {c.program}", "met" if c.met_at else "missed" if c.missed_at
              else "running", f"due {c.due_at:%Y-%m-%d %H:%M}"
              + (f", met {c.met_at:%Y-%m-%d}" if c.met_at else "")] for c in referral.clocks]
    return {
        "referral_id": referral_id,
        "chase": None if chase is None else {
            "status": chase.status, "specialist": chase.specialist,
            "visit_at": chase.visit_at.isoformat(), "steps_done": chase.steps_done,
            "last_step": chase.last_step, "stopped_by": chase.stopped_by,
            "task": f"{chase.task_server}/Task/{chase.task_id}" if chase.task_id else ""},
        "updates": [{"milestone": u.milestone, "channel": u.channel, "referrer": u.referrer,
                     "text": u.text, "sent_at": u.sent_at.isoformat() if u.sent_at else None}
                    for u in updates],
        "deliveries": [{"document": d.document, "channel": d.channel, "status": d.status,
                        "referrer": d.referrer, "remote": d.remote, "receipt": d.receipt,
                        "received_at": d.received_at.isoformat() if d.received_at else None,
                        "error": d.error} for d in deliveries],
        "clocks": [{"program": c.program, "goal": c.goal,
                    "started_at": c.started_at.isoformat(), "due_at": c.due_at.isoformat(),
                    "met_at": c.met_at.isoformat() if c.met_at else None,
                    "missed_at": c.missed_at.isoformat() if c.missed_at else None}
                   for c in referral.clocks],
        "rows": rows,
    }


def running_clocks(adapter: LoopAdapter) -> list[dict[str, str]]:
    """Every clock still running, due soonest first: its miss check is a pending work item."""
    with adapter.core.db.read() as conn:
        rows = conn.execute(sa.select(work_items.c.payload, work_items.c.run_at).where(
            work_items.c.kind == CLOCK_KIND, work_items.c.status == "pending")
            .order_by(work_items.c.run_at)).all()
    return [{"referral_id": str(r.payload["referral_id"]), "program": str(r.payload["program"]),
             "due_at": r.run_at.isoformat()} for r in rows if r.payload.get("op") == DUE]
