"""The outcomes dashboard as plain data for the SMART app (smart_app/analytics_port.py draws it):
the filters read from a query string, the headline rates, the funnel with where referrals fell
out, the time-to-X distributions, completion by cohort, the breakdown table, and for every
number the query string of the referrals behind it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from analytics import charts
from analytics.contribution import DIMENSIONS
from analytics.metrics import DURATIONS, STEPS, Histogram, Totals
from analytics.outcomes import (
    PARTS,
    Filters,
    Outcomes,
    dimension_menus,
    outcomes,
    referrals_behind,
)
from analytics.report import outcomes_csv
from referrals.store.database import Database

DIMENSION_LABELS = {"specialty": "Specialty", "referrer": "Referrer",
                    "destination": "Destination", "payer": "Payer", "priority": "Priority"}
#: the milestone count behind each duration (its referrals are those that have it)
DURATION_PARTS = {"first_contact": "contacted", "scheduling": "scheduled", "visit": "visited",
                  "authorization": "auth_decided"}
STEP_PARTS = dict(zip(STEPS, ("referrals", "accepted", "contacted", "scheduled", "visited",
                              "receipts"), strict=True))
PAGE = 50
#: the query value that selects referrals without a value for a dimension (no payer, ...);
#: an empty value selects them all
NONE = "(none)"


class FilterError(ValueError):
    """A query string the dashboard cannot read; the message says what to change."""


#: the referral sources a view is limited to (a tenant's source-key prefixes); None: all
Sources = tuple[str, ...] | None


def read_filters(args: Mapping[str, str], today: date, sources: Sources = None
                 ) -> tuple[Filters, dict[str, str]]:
    """The view a query string asks for (of the referrals of `sources` only, when given), and
    the chosen values to show back in the form."""
    grain = args.get("grain") or "month"
    if grain not in ("week", "month"):
        raise FilterError("grain must be week or month")
    if grain == "week":  # sixteen weeks, this one included
        default_since = today - timedelta(weeks=15)
    else:  # twelve months, this one included
        default_since = (date(today.year - 1, today.month, 1) + timedelta(days=31)).replace(day=1)
    since = _date(args.get("since"), "since") or default_since
    until = _date(args.get("until"), "until") or today
    if until < since:
        raise FilterError("'until' is before 'since'")
    # whole weeks or months: the rollup's cells, the facts and the lists behind every number
    # then count the same referrals, and the page shows the range they cover
    since, until = _grain_start(since, grain), _grain_end(until, grain)
    where = tuple((dim, _stored(args[dim][:256])) for dim in DIMENSIONS if args.get(dim))
    by = args.get("by") or "referrer"
    if by not in DIMENSIONS:
        raise FilterError(f"by must be one of {', '.join(DIMENSIONS)}")
    chosen = {"grain": grain, "since": since.isoformat(), "until": until.isoformat(), "by": by,
              **{dim: value or NONE for dim, value in where}}
    return Filters(grain=grain, since=since, until=until, where=where, breakdown=by,
                   sources=sources), chosen


def view(db: Database, args: Mapping[str, str], now: datetime | None = None,
         sources: Sources = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    filters, chosen = read_filters(args, now.date(), sources)
    found = outcomes(db, filters, now)
    base = dict(chosen)  # the lists behind the numbers lead back to this view, `by` included

    def link(part: str, cohort: str = "", **extra: str) -> str:
        return urlencode({**base, **extra, "part": part, **({"cohort": cohort} if cohort else {})})

    return {
        "chosen": chosen, "exact": found.exact,
        "computed_at": found.computed_at.strftime("%Y-%m-%d %H:%M UTC"),
        "options": {"grain": ["month", "week"], "by": list(DIMENSIONS),
                    "labels": DIMENSION_LABELS,
                    **dimension_menus(db, sources=sources)},
        "headline": _headline(found, link),
        "funnel": _funnel(found.totals, link),
        "dropoff": [{"step": step, "outcome": outcome, "reason": reason, "n": n,
                     "link": link(f"dropped:{step}:{outcome}:{reason}")}
                    for step, outcome, reason, n in found.dropoff],
        "durations": _durations(found, link),
        "cohorts": _cohorts(found, link),
        "breakdown": _breakdown(found, base),
        "clocks": _clocks(found.totals, link),
        "csv": urlencode(chosen),
    }


def csv(db: Database, args: Mapping[str, str], now: datetime | None = None,
        sources: Sources = None) -> str:
    now = now or datetime.now(UTC)
    filters, _chosen = read_filters(args, now.date(), sources)
    return outcomes_csv(outcomes(db, filters, now))


def referrals(db: Database, args: Mapping[str, str], now: datetime | None = None,
              sources: Sources = None) -> dict[str, Any]:
    """One page of the referrals behind a number (`part`, optionally of one `cohort`)."""
    now = now or datetime.now(UTC)
    filters, chosen = read_filters(args, now.date(), sources)
    part = args.get("part") or "referrals"
    if part not in PARTS and part != "overdue" and not part.startswith("dropped:"):
        raise FilterError(f"part must be one of {', '.join(PARTS)}, overdue or dropped:...")
    cohort = args.get("cohort", "")
    if cohort:
        _date(cohort, "cohort")
    after = None
    if args.get("after"):
        moment, _, last = args["after"].partition("|")
        after = (_moment(moment), last)
    try:
        rows = referrals_behind(db, filters, part, cohort_start_day=cohort, after=after,
                                limit=PAGE + 1, now=now)
    except ValueError as exc:
        raise FilterError(str(exc)) from exc
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    following = ""
    if more:
        last_row = rows[-1]
        following = urlencode({**chosen, "part": part, **({"cohort": cohort} if cohort else {}),
                               "after": f"{last_row.detected_at.isoformat()}|"
                                        f"{last_row.referral_id}"})
    back = urlencode({k: v for k, v in chosen.items()})
    return {"title": _part_title(part), "cohort": cohort, "chosen": chosen,
            "rows": [{**asdict(r), "detected": r.detected_at.strftime("%Y-%m-%d")}
                     for r in rows],
            "next": following, "back": back, "patients": [r.patient for r in rows]}


# -- pieces ------------------------------------------------------------------------------------

def _headline(found: Outcomes, link: Any) -> list[dict[str, Any]]:
    t = found.totals
    return [
        {"label": "Referrals", "value": f"{t.referrals:,}",
         "detail": f"{t.withdrawn:,} withdrawn by the referrer", "link": link("referrals")},
        {"label": "Completion", "value": _percent(t.completion_rate),
         "detail": f"{t.visited:,} visits of {t.denominator:,}", "link": link("visited")},
        {"label": "Scheduling", "value": _percent(t.scheduling_rate),
         "detail": f"{t.scheduled:,} booked of {t.denominator:,}", "link": link("scheduled")},
        {"label": "Loop closure", "value": _percent(t.loop_closure_rate),
         "detail": f"{t.receipts:,} reports received", "link": link("receipts")},
        {"label": "No-shows", "value": _percent(t.no_show_rate),
         "detail": f"{t.no_shows:,} of {t.no_shows + t.visited:,} appointments",
         "link": link("no_shows")},
        {"label": "Overdue now", "value": _percent(found.overdue_share),
         "detail": f"{found.overdue:,} of {found.open:,} open", "link": link("overdue")},
        {"label": "Done by Refloop", "value": _percent(t.automation_share),
         "detail": f"{t.steps_refloop:,} of {t.steps_refloop + t.steps_person:,} steps",
         "link": link("referrals")},
    ]


def _funnel(totals: Totals, link: Any) -> dict[str, Any]:
    steps = totals.funnel()
    first = steps[0][1] or 1
    top = max((n for _, n in steps), default=0) or 1
    rows, height = charts.bar_rows([
        (name, f"{n:,} ({100 * n / first:.0f}%)", n / top, link(STEP_PARTS[name]))
        for name, n in steps])
    return {"rows": [asdict(r) for r in rows], "height": height,
            "title": "; ".join(f"{name} {n}" for name, n in steps)}


def _durations(found: Outcomes, link: Any) -> list[dict[str, Any]]:
    result = []
    for name, (label, _start, _end) in DURATIONS.items():
        spread = found.spreads[name]
        columns, height = charts.distribution(found.histograms.get(name) or Histogram())
        result.append({"name": name, "label": label, "n": spread.n,
                       "median": _hours(spread.median), "p90": _hours(spread.p90),
                       "link": link(DURATION_PARTS[name]), "height": height,
                       "columns": [asdict(c) for c in columns],
                       "title": f"{label}: " + ", ".join(f"{c.label} {c.unit}: {c.count}"
                                                         for c in columns)})
    return result


def _cohorts(found: Outcomes, link: Any) -> dict[str, Any]:
    items = []
    for cohort in found.cohorts:
        t = cohort.totals
        rate = t.completion_rate
        items.append((cohort.label, f"{_percent(rate)} ({t.visited:,}/{t.denominator:,}) · "
                      f"loop {_percent(t.loop_closure_rate)} · {t.open:,} open", rate or 0.0,
                      link("visited", cohort.start)))
    rows, height = charts.bar_rows(items)
    return {"rows": [asdict(r) for r in rows], "height": height,
            "title": "; ".join(f"{r[0]} {r[1]}" for r in items)}


def _breakdown(found: Outcomes, base: dict[str, str]) -> dict[str, Any]:
    dim = found.filters.breakdown
    rows = []
    for value, t in found.breakdown:
        narrowed = {**base, dim: value or NONE}

        def cell(part: str, text: str, narrowed: dict[str, str] = narrowed) -> dict[str, str]:
            return {"text": text, "link": urlencode({**narrowed, "part": part})}

        rows.append({"value": value or NONE, "cells": [
            cell("referrals", f"{t.referrals:,}"),
            cell("visited", _percent(t.completion_rate)),
            cell("scheduled", _percent(t.scheduling_rate)),
            cell("receipts", _percent(t.loop_closure_rate)),
            cell("no_shows", _percent(t.no_show_rate)),
            cell("open", f"{t.open:,}")]})
    return {"dim": dim, "label": DIMENSION_LABELS[dim],
            "headers": ["Referrals", "Completion", "Scheduling", "Loop closure", "No-shows",
                        "Open"], "rows": rows}


def _clocks(totals: Totals, link: Any) -> list[dict[str, Any]]:
    """The program clocks (TEAM, ASM) of the view's referrals, when any started."""
    rows = []
    for program, label in (("team", "TEAM: primary care visit within 30 days of discharge"),
                           ("asm", "ASM: specialist feedback reached primary care")):
        started = getattr(totals, f"{program}_started")
        if not started:
            continue
        cells = [{"text": f"{getattr(totals, f'{program}_{what}'):,}",
                  "link": link(f"{program}_{what}")}
                 for what in ("started", "on_time", "late", "missed")]
        rows.append({"label": label, "cells": cells,
                     "rate": _percent(totals.clock_on_time_rate(program))})
    return rows


def _part_title(part: str) -> str:
    if part.startswith("dropped:"):
        _, step, outcome, reason = [*part.split(":", 3), "", "", ""][:4]
        return f"Referrals {outcome} after '{step}' ({reason})"
    titles = {"referrals": "All referrals", "withdrawn": "Withdrawn by the referrer",
              "accepted": "Accepted", "contacted": "Patient contacted",
              "scheduled": "Appointment booked", "visited": "Visit completed",
              "notes": "Consult note received", "receipts": "Report received by the referrer",
              "no_shows": "With a no-show", "open": "Open", "overdue": "Open and overdue",
              "auth_requested": "Authorization requested",
              "auth_decided": "Authorization decided"}
    for program in ("team", "asm"):
        for what, words in (("started", "clock started"), ("on_time", "clock met on time"),
                            ("late", "clock met late"), ("missed", "clock missed")):
            titles[f"{program}_{what}"] = f"{program.upper()} {words}"
    return titles.get(part, part)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _hours(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} h" if value < 48 else f"{value / 24:.1f} d"


def _date(text: str | None, name: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError as exc:
        raise FilterError(f"{name} must be a date (YYYY-MM-DD)") from exc


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise FilterError("'after' is not a page position from this page") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Port:
    """What the SMART app calls (smart_app/analytics_port.py): plain data in and out.

    `refresh()` runs before the figures are read (the wiring hands in one batch of the rollup,
    so a page shows events a moment old rather than up to a rollup period old)."""

    def __init__(self, db: Database, refresh: Callable[[], object] = lambda: None) -> None:
        self.db = db
        self.refresh = refresh

    def view(self, args: Mapping[str, str], sources: Sources = None) -> dict[str, Any]:
        self.refresh()
        return view(self.db, args, sources=sources)

    def csv(self, args: Mapping[str, str], sources: Sources = None) -> str:
        return csv(self.db, args, sources=sources)

    def referrals(self, args: Mapping[str, str], sources: Sources = None) -> dict[str, Any]:
        return referrals(self.db, args, sources=sources)


def _grain_start(day: date, grain: str) -> date:
    """The first day of `day`'s week (Monday) or month."""
    return day - timedelta(days=day.weekday()) if grain == "week" else day.replace(day=1)


def _grain_end(day: date, grain: str) -> date:
    """The last day of `day`'s week (Sunday; the calendar's last day at its end) or month."""
    if grain == "week":
        left = timedelta(days=6 - day.weekday())
        return day + left if date.max - day >= left else date.max
    if day.month == 12:
        return day.replace(day=31)
    return date(day.year, day.month + 1, 1) - timedelta(days=1)


def _stored(value: str) -> str:
    """A filter value as the rollup stores it: NONE is the empty value."""
    return "" if value == NONE else value

