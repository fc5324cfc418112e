"""The day's plan: for every active ladder, the next rung due within the horizon and what the rule
engine decides for it now, with everything read in bulk (plans, referral stages, Patients,
message histories, consent events, failing contact points) so 100,000 referrals are decided in
seconds. `refloop outreach due` prints it; the benchmark times it.

Normalising phone numbers and email addresses is the costly part; the normalised contact points
are kept per Patient version in the process (a changed Patient is normalised again).
"""

from __future__ import annotations

import gc
import json
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from outreach import ladders
from outreach.contacts import contact_points
from outreach.rules import Ask, Consent, Decision, PatientView, Sent, Situation, consent_state
from outreach.rules import decide as decide_one
from outreach.runtime import Runtime
from outreach.store import HANDED
from outreach.tables import outreach_consents, outreach_failing, outreach_messages, outreach_plans
from outreach.timezones import resolve
from referrals.model import TERMINAL_STAGES
from referrals.store.schema import referrals, resources

CHUNK = 5000


@dataclass(frozen=True)
class Due:
    referral_id: str
    plan_id: str
    rung: int
    channel: str
    template: str
    due: datetime
    decision: Decision | None  # None for task and fail rungs


def decide_due(rt: Runtime, now: datetime, horizon: timedelta = timedelta(hours=24)
               ) -> list[Due]:
    """What each active ladder does next within `horizon`, decided as of its due time."""
    with _no_cyclic_gc():
        return _decide_due(rt, now, horizon)


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """The plan builds a few hundred thousand small objects that all live until it returns:
    the cyclic collector would scan them again and again (a fifth of the time) and free
    nothing. Reference counting still frees everything as usual."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _decide_due(rt: Runtime, now: datetime, horizon: timedelta) -> list[Due]:
    until = now + horizon
    region, default = rt.config.default_region, rt.config.default_time_zone
    with rt.db.read() as c:
        rows = c.execute(sa.select(
            outreach_plans.c.id, outreach_plans.c.referral_id, outreach_plans.c.patient,
            sa.cast(outreach_plans.c.rungs, sa.Text).label("rungs"),
            sa.cast(outreach_plans.c.done, sa.Text).label("done"), outreach_plans.c.zone,
            outreach_plans.c.started_at, referrals.c.stage,
        ).join(referrals, referrals.c.id == outreach_plans.c.referral_id)
            .where(outreach_plans.c.status == "active")).all()
        pending = [n for n in (_next(row, until) for row in rows) if n is not None]
        patients = sorted({n[0].patient for n in pending})
        views = _views(c, patients, region, default)
        history = _history(c, now - timedelta(days=8))
        consent = _consents(c)
        failing = _failing(c)
    terminal = {s.value for s in TERMINAL_STAGES}
    plan: list[Due] = []
    for row, index, rung, due in pending:
        if rung.channel not in ladders.MESSAGE_CHANNELS:
            plan.append(Due(row.referral_id, row.id, index, rung.channel, rung.template, due,
                            None))
            continue
        view = views.get(row.patient) or PatientView((), (default,), "default")
        decision = decide_one(
            Situation(open=row.stage not in terminal), view,
            Ask(rung.template, (rung.channel,), rung.window),
            _consent(view, consent.get(row.patient), failing),
            history.get(row.patient, []), rt.config.policy, max(due, now))
        plan.append(Due(row.referral_id, row.id, index, rung.channel, rung.template, due,
                        decision))
    return plan


NO_CONSENT_EVENTS = Consent()


def _consent(view: PatientView, events: list[tuple[datetime, str, str, str]] | None,
             failing: dict[str, frozenset[str]]) -> Consent:
    """The patient's consent state: channels opted out, addresses blocked, contact points the
    provider refused (most patients have none of these: no work for them)."""
    addresses = {c.address for c in view.contacts}
    refused = frozenset().union(*(failing[a] for a in addresses if a in failing)) \
        if failing else frozenset()
    if not events:
        return Consent(failing=refused) if refused else NO_CONSENT_EVENTS
    mine = [(at, ch, kind) for at, ch, kind, address in events if not address]
    blocked = frozenset(a for a in addresses if consent_state(
        (at, ch, kind) for at, ch, kind, address in events if address == a))
    return Consent(consent_state(mine), blocked, refused)


def _next(row: Any, until: datetime) -> tuple[Any, int, ladders.Rung, datetime] | None:
    done = json.loads(row.done) if row.done else {}
    best: tuple[Any, int, ladders.Rung, datetime] | None = None
    for index, rung in enumerate(_rungs(row.rungs)):
        if str(index) in done:
            continue
        due = rung.due(row.started_at, row.zone)
        if due <= until and (best is None or due < best[3]):
            best = (row, index, rung, due)
    return best


@lru_cache(maxsize=64)
def _rungs(text: str) -> tuple[ladders.Rung, ...]:
    """A plan's rungs (plans of one ladder version share the text: parsed once)."""
    return tuple(ladders.Rung.from_json(data) for data in json.loads(text))


#: (patient, version, region, default zone) -> view; a changed Patient has a new version
_VIEWS: OrderedDict[tuple[str, int, str, str], PatientView] = OrderedDict()
VIEW_CACHE_SIZE = 150_000


def view_of(patient: str, version: int, body: dict[str, Any] | None, region: str,
            default: str) -> PatientView:
    key = (patient, version, region, default)
    found = _VIEWS.get(key)
    if found is not None:
        return found
    contacts, phone_zones = contact_points(body, region, datetime.now(UTC))
    zones = resolve(body, phone_zones, default)
    view = PatientView(tuple(contacts), zones.zones, zones.source)
    _VIEWS[key] = view
    if len(_VIEWS) > VIEW_CACHE_SIZE:
        _VIEWS.popitem(last=False)
    return view


def clear_cache() -> None:
    _VIEWS.clear()


def _views(c: Any, patients: list[str], region: str, default: str) -> dict[str, PatientView]:
    """Each Patient's view: from the cache when its version is unchanged, else normalised from
    its body (read only for those)."""
    ids = {p.split("/", 1)[1]: p for p in patients if p.startswith("Patient/")}
    versions: dict[str, int] = {}
    active_ids = sa.select(sa.func.substr(outreach_plans.c.patient, len("Patient/") + 1)).where(
        outreach_plans.c.status == "active")
    for rid, version in c.execute(sa.select(resources.c.resource_id, resources.c.version)
                                  .where(resources.c.resource_type == "Patient",
                                         resources.c.resource_id.in_(active_ids),
                                         resources.c.deleted.is_(False))):
        patient = ids.get(rid)
        if patient is not None:
            versions[patient] = max(int(version), versions.get(patient, 0))
    views = {p: _VIEWS[(p, v, region, default)] for p, v in versions.items()
             if (p, v, region, default) in _VIEWS}
    missing = [p for p in versions if p not in views]
    for patient, (version, body) in _patients(c, missing):
        views[patient] = view_of(patient, version, body, region, default)
    return views


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), CHUNK):
        yield values[start:start + CHUNK]


def _patients(c: Any, patients: list[str]) -> Iterable[tuple[str, tuple[int, dict[str, Any]]]]:
    ids = {p.split("/", 1)[1]: p for p in patients if p.startswith("Patient/")}
    for chunk in _chunks(list(ids)):
        for rid, version, body in c.execute(sa.select(
                resources.c.resource_id, resources.c.version, resources.c.body).where(
                resources.c.resource_type == "Patient", resources.c.resource_id.in_(chunk),
                resources.c.deleted.is_(False))):
            yield ids[rid], (int(version), body)


def _active_patients() -> sa.Select[Any]:
    """The patients of active ladders, as a subquery: one statement instead of lists of
    thousands of bound parameters (their compilation cost as much as the reading)."""
    return sa.select(outreach_plans.c.patient).where(outreach_plans.c.status == "active")


def _history(c: Any, since: datetime) -> dict[str, list[Sent]]:
    found: dict[str, list[Sent]] = defaultdict(list)
    for patient, purpose, channel, sent_at in c.execute(sa.select(
            outreach_messages.c.patient, outreach_messages.c.purpose,
            outreach_messages.c.channel, outreach_messages.c.sent_at).where(
            outreach_messages.c.patient.in_(_active_patients()),
            outreach_messages.c.direction == "out", outreach_messages.c.sent_at >= since,
            outreach_messages.c.status.in_(HANDED))):
        found[patient].append(Sent(purpose, channel, sent_at))
    return found


def _consents(c: Any) -> dict[str, list[tuple[datetime, str, str, str]]]:
    found: dict[str, list[tuple[datetime, str, str, str]]] = defaultdict(list)
    for patient, channel, kind, address, at in c.execute(sa.select(
            outreach_consents.c.patient, outreach_consents.c.channel,
            outreach_consents.c.kind, outreach_consents.c.address, outreach_consents.c.at
    ).where(outreach_consents.c.patient.in_(_active_patients()))):
        found[patient].append((at, channel, kind, address))
    return found


def _failing(c: Any) -> dict[str, frozenset[str]]:
    """Per address, its refused contact points ("channel:address")."""
    found: dict[str, set[str]] = defaultdict(set)
    for address, channel in c.execute(sa.select(outreach_failing.c.address,
                                                outreach_failing.c.channel)):
        found[address].add(f"{channel}:{address}")
    return {address: frozenset(points) for address, points in found.items()}
