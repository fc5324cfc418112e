"""The incremental rollup against real SQLite and PostgreSQL stores: the event log written by
the real referral service, caught up in batches, equal to a rebuild from scratch and to the
definitions computed in memory; gaps in the event ids waited for, then skipped."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "analytics"))

from histories import COORDINATOR, T0, D, History, october, referral_c, replay

from analytics.facts import Facts
from analytics.metrics import total
from analytics.rollup import GAP_SECONDS, Position, Rollup
from analytics.tables import analytics_cube, analytics_dropoff, analytics_facts
from referrals import closed_loop as loop
from referrals.model import Command
from refloop.services import Services


def snapshot(services: Services) -> dict[str, Any]:
    """Every rollup row, comparable across runs."""
    with services.db.read() as c:
        facts = {r["referral_id"]: dict(r) for r in
                 c.execute(sa.select(analytics_facts)).mappings()}
        cube = {(r["grain"], r["dim"], r["value"], r["period"]): dict(r) for r in
                c.execute(sa.select(analytics_cube)).mappings()}
        drops = {tuple(r[:7]): r.n for r in c.execute(sa.select(analytics_dropoff))}
    return {"facts": facts, "cube": {k: v for k, v in cube.items() if v["referrals"]},
            "drops": {k: v for k, v in drops.items() if v}}


def cube_row(services: Services, grain: str, dim: str, value: str, period: str) -> Any:
    with services.db.read() as c:
        return c.execute(sa.select(analytics_cube).where(
            analytics_cube.c.grain == grain, analytics_cube.c.dim == dim,
            analytics_cube.c.value == value, analytics_cube.c.period == period)).mappings().one()


def test_catch_up_matches_the_definitions_and_a_rebuild(services: Services) -> None:
    histories = october()
    ids = [replay(services.referrals, h) for h in histories]
    rollup = Rollup(services.db)
    assert rollup.catch_up(limit=7) == sum(len(h.events) for h in histories)  # several batches
    october_row = cube_row(services, "m", "all", "", "2026-10-01")
    expected = total(h.facts() for h in histories)
    assert {k: october_row[k] for k in expected.as_dict()} == expected.as_dict()
    assert (october_row["referrals"], october_row["withdrawn"], october_row["visited"],
            october_row["receipts"], october_row["no_shows"]) == (6, 1, 3, 2, 2)
    # visits after 8, 10 and 20 days: bins 48 + 6, 48 + 8 and 48 + 18 (by the day from 48 h)
    assert october_row["histograms"]["visit"] == {"54": 1, "56": 1, "66": 1}
    # the cohort's week starts on Monday October 5th
    assert cube_row(services, "w", "all", "", "2026-10-05")["referrals"] == 6
    assert cube_row(services, "m", "specialty", "cardiology", "2026-10-01")["referrals"] == 6

    # more history: C's report reaches the referrer; a November referral spans into December
    services.referrals.act(ids[2], Command(loop.RECORD_RECEIPT, at=T0 + 30 * D))
    late = History.detected("n1", datetime(2026, 11, 30, 20, 0, tzinfo=UTC),
                            specialty="dermatology")
    late.step("accept", late.referral.created_at + D, actor=COORDINATOR)
    replay(services.referrals, late)
    assert rollup.catch_up() == 3
    assert cube_row(services, "m", "all", "", "2026-10-01")["receipts"] == 3
    assert cube_row(services, "m", "all", "", "2026-11-01")["accepted"] == 1
    assert cube_row(services, "m", "specialty", "cardiology", "2026-10-01")["receipts"] == 3
    assert rollup.catch_up() == 0  # nothing new

    incremental = snapshot(services)
    assert rollup.rebuild() == 7
    assert snapshot(services) == incremental
    assert rollup.position().below == rollup.position().seen > 0


def test_facts_survive_the_store_round_trip(services: Services) -> None:
    history = referral_c()
    rid = replay(services.referrals, history)
    Rollup(services.db).catch_up()
    with services.db.read() as c:
        row = c.execute(sa.select(analytics_facts)
                        .where(analytics_facts.c.referral_id == rid)).mappings().one()
    stored = Facts.from_row(row)
    assert stored == history.facts().__class__(**{**history.facts().to_row(),
                                                  "referral_id": rid})


def test_a_gap_in_the_event_ids_is_waited_for_then_skipped() -> None:
    now = [datetime(2026, 11, 1, tzinfo=UTC)]
    rollup = Rollup(db=None, clock=lambda: now[0])  # type: ignore[arg-type]

    def rows(*ids: int) -> list[Any]:
        return [SimpleNamespace(id=i, referral_id=f"r{i}") for i in ids]

    start = Position(below=10, seen=10, gaps={})
    moved, touched = rollup._advance(start, rows(11, 12, 14, 15))
    assert (moved.below, moved.seen, sorted(moved.gaps or {})) == (12, 15, [13])
    assert touched == {"r11", "r12", "r14", "r15"}
    # 13 commits late (a longer transaction): read now, and only the new ids are touched again
    moved2, touched2 = rollup._advance(moved, rows(13, 14, 15, 16))
    assert (moved2.below, moved2.seen, moved2.gaps) == (16, 16, {})
    assert touched2 == {"r13", "r16"}
    # 17 never comes (rolled back): waited for GAP_SECONDS, then skipped
    moved3, _ = rollup._advance(moved2, rows(18))
    assert (moved3.below, sorted(moved3.gaps or {})) == (16, [17])
    now[0] += timedelta(seconds=GAP_SECONDS + 1)
    moved4, touched4 = rollup._advance(moved3, rows(18, 19))
    assert (moved4.below, moved4.gaps) == (19, {})
    assert touched4 == {"r19"}
