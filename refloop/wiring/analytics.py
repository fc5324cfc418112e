"""Wiring of the analytics adapter (analytics/): the rollup and its timer, the outcomes dashboard
in the SMART app, `GET /fhir/MeasureReport`, the Prometheus figures (`/metrics` behind the
`metrics:read` scope, the metrics role off the public port, the workers' counters),
`refloop report` and `refloop analytics ...`. See docs/metrics.md."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from refloop.context import Context, pass_context
from refloop.output import print_json, print_table
from refloop.wiring import Timer

if TYPE_CHECKING:
    from datetime import datetime

    from flask import Flask
    from sqlalchemy.engine import Connection

    from analytics.config import AnalyticsConfig
    from analytics.operations import Figure, Operations, Source
    from analytics.rollup import Rollup
    from referrals.store.work import WorkItem
    from referrals.worker import Handler, Observer
    from refloop.core_services import Services
    from refloop.settings import Settings
    from refloop.wiring import Role

NAME = "analytics"
ROLLUP = "analytics.rollup"


class Analytics:
    """What the wiring builds once per process."""

    def __init__(self, config: AnalyticsConfig, rollup: Rollup, operations: Operations) -> None:
        self.config = config
        self.rollup = rollup
        self.operations = operations


def build(services: Services) -> None:
    from analytics.dashboard import Port

    built = services.adapters[NAME] = _analytics(services)
    smart = services.adapters.get("smart")
    if smart is not None:  # the SMART app's Dashboard page shows the outcomes
        smart.analytics = Port(services.db, refresh=lambda: built.rollup.step())


def analytics_of(services: Services) -> Analytics:
    found = services.adapters.get(NAME)
    if found is None:
        found = services.adapters[NAME] = _analytics(services)
    return found


def _analytics(services: Services) -> Analytics:
    from analytics.config import from_section
    from analytics.operations import Operations
    from analytics.rollup import Rollup

    settings = services.settings
    return Analytics(from_section(settings.section(NAME), settings.var_dir),
                     Rollup(services.db), Operations(services.db, _adapter_sources()))


def _adapter_sources() -> list[Source]:
    """What the outreach and PAS adapters decided, read from their own tables (the wiring may
    know every adapter; the analytics adapter knows none)."""
    from analytics.operations import Figure, TailCount
    from outreach.tables import outreach_decisions
    from pas_client.tables import pas_requests, pas_responses

    decisions = TailCount(outreach_decisions, "id", "at", ("outcome", "rule"))
    responses = TailCount(pas_responses, "id", "received_at", ("overall",))

    def outreach(c: Connection, now: datetime) -> list[Figure]:
        counted = decisions.count(c, now)
        return [Figure("outreach_decisions", "Messages to patients sent, deferred or skipped, "
                       "by the rule that decided (quiet hours, caps, consent...)", "counter",
                       ("outcome", "rule"), sorted(counted.items()))]

    def pas(c: Connection, now: datetime) -> list[Figure]:
        import sqlalchemy as sa

        statuses = c.execute(sa.select(pas_requests.c.status, sa.func.count())
                             .group_by(pas_requests.c.status)).all()
        counted = responses.count(c, now)
        return [Figure("pas_requests", "Prior-authorization requests by their status now "
                       "(approved, denied, pended...)", "gauge", ("status",),
                       [((str(status),), int(n)) for status, n in statuses]),
                Figure("pas_responses", "Payer answers received, by decision", "counter",
                       ("outcome",), sorted(counted.items()))]

    return [outreach, pas]


def serving(settings: Settings) -> None:
    """Every process of `refloop serve` counts into one directory (multi-process mode)."""
    from analytics.config import from_section
    from analytics.prometheus import prepare_directory

    config = from_section(settings.section(NAME), settings.var_dir)
    assert config.metrics_dir is not None
    prepare_directory(config.metrics_dir)


def work_observer(services: Services) -> Observer:
    from analytics.prometheus import observe_work

    return observe_work


def roles(services: Services) -> dict[str, Role]:
    from analytics.metrics_web import metrics_role

    found = analytics_of(services)
    if not found.config.metrics_port:
        return {}
    return {"metrics": metrics_role(found.operations, found.config.metrics_dir,
                                    found.config.metrics_host, found.config.metrics_port)}


def work_handlers(services: Services) -> dict[str, Handler]:
    def catch_up(item: WorkItem) -> None:
        from referrals.errors import InboundError

        unknown = set(item.payload) - {"timer", "slot", "start"}  # what timers add
        if unknown:
            raise InboundError(f"{ROLLUP} takes no payload (got {sorted(unknown)}); to rebuild "
                               "the rollups run 'refloop analytics rebuild'")
        analytics_of(services).rollup.catch_up()

    return {ROLLUP: catch_up}


def timers(services: Services) -> list[Timer]:
    every = analytics_of(services).config.rollup_seconds
    return [Timer("analytics-rollup", every, ROLLUP, at_start=True)]


def routes(app: Flask, services: Services) -> None:
    from analytics.fhir_api import measure_report_blueprint
    from analytics.metrics_web import metrics_blueprint
    from capability.statement import interaction
    from refloop.wiring.access import guard

    found = analytics_of(services)
    metrics = metrics_blueprint(found.operations, found.config.metrics_dir)
    guard(services).protect(metrics, "metrics:read", whole=True)  # every tenant's figures
    app.register_blueprint(metrics)
    app.register_blueprint(measure_report_blueprint(
        services.db, access=guard(services), declare=interaction,
        base_url=services.settings.base_url,
        refresh=lambda: analytics_of(services).rollup.catch_up()))


def commands() -> list[click.Command]:
    return [report, analytics]


# -- refloop report ----------------------------------------------------------------------------

@click.command()
@click.option("--period", required=True, help="A month (2026-11) or a year (2026).")
@click.option("--json", "as_json", is_flag=True, help="The figures as JSON, for scripts.")
@click.option("--csv", "as_csv", is_flag=True,
              help="CSV: the period, then one row per value of each dimension.")
@click.option("--fhir", "as_fhir", is_flag=True, help="The FHIR MeasureReport (JSON).")
@pass_context
def report(obj: Context, period: str, as_json: bool, as_csv: bool, as_fhir: bool) -> None:
    """Referral outcomes of one period: completion, scheduling, loop closure (CMS50 shape),
    no-shows, times to contact, scheduling, visit and authorization, where referrals fell out."""
    from analytics.measure_report import build_measure_report
    from analytics.report import PeriodError, parse_period, period_report, plain, report_csv

    if sum((as_json, as_csv, as_fhir)) > 1:
        raise click.UsageError("choose one of --json, --csv, --fhir")
    try:
        chosen = parse_period(period)
    except PeriodError as exc:
        raise click.BadParameter(str(exc), param_hint="--period") from exc
    services = obj.services
    _catch_up(services, quiet=as_json or as_csv or as_fhir)
    found = period_report(services.db, chosen)
    if as_json:
        print_json(plain(found))
    elif as_csv:
        sys.stdout.write(report_csv(found))
    elif as_fhir:
        print_json(build_measure_report(found))
    else:
        _print_report(found)


def _print_report(found: Any) -> None:
    from analytics.metrics import DURATIONS

    totals, closure = found.overall.totals, found.loop_closure
    state = "complete" if found.complete else "in progress (figures may still change)"
    click.echo(f"Referral outcomes, {found.period.text} ({state})\n")
    rows = [
        ["referrals detected", totals.referrals, ""],
        ["withdrawn by the referrer", totals.withdrawn, "(left out of the rates)"],
        ["completion (visit completed)", totals.visited, _percent(totals.completion_rate)],
        ["scheduling (appointment booked)", totals.scheduled, _percent(totals.scheduling_rate)],
        ["loop closure (report received)", totals.receipts,
         _percent(totals.loop_closure_rate)],
        ["loop closure, CMS50 shape (patients)", f"{closure.numerator}/{closure.denominator}",
         _percent(closure.score)],
        ["no-shows / appointments", f"{totals.no_shows}/{totals.no_shows + totals.visited}",
         _percent(totals.no_show_rate)],
        ["open, of which overdue", f"{totals.open}, {found.overdue}", ""],
        ["steps done by Refloop", f"{totals.steps_refloop}/"
         f"{totals.steps_refloop + totals.steps_person}", _percent(totals.automation_share)],
    ]
    print_table(["figure", "count", "rate"], rows)
    click.echo("")
    print_table(["duration", "referrals", "median", "90th percentile"], [
        [label, found.overall.spreads[name].n, _hours(found.overall.spreads[name].median),
         _hours(found.overall.spreads[name].p90)]
        for name, (label, _s, _e) in DURATIONS.items()])
    if found.overall.dropoff:
        click.echo("\nWhere referrals fell out:")
        print_table(["after", "ended", "reason", "referrals"],
                    [list(d) for d in found.overall.dropoff])


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _hours(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} h" if value < 48 else f"{value / 24:.1f} d"


def _catch_up(services: Services, *, quiet: bool) -> None:
    """Bring the rollup up to the event log before reporting."""
    read = analytics_of(services).rollup.catch_up(rounds=10_000)
    if read and not quiet:
        click.echo(f"(read {read} new events into the rollup)", err=True)


# -- refloop analytics ---------------------------------------------------------------------------

@click.group()
def analytics() -> None:
    """The analytics rollups (derived from the event log)."""


@analytics.command("rebuild")
@pass_context
def analytics_rebuild(obj: Context) -> None:
    """Recompute every rollup from the event log (after a definition changed, or to check)."""
    import sqlalchemy as sa

    from referrals.store.schema import referrals

    services = obj.services
    with services.db.read() as c:
        total = int(c.execute(sa.select(sa.func.count()).select_from(referrals)).scalar_one())
    with click.progressbar(length=total, label="rebuilding from the event log",
                           file=sys.stderr) as bar:
        count = analytics_of(services).rollup.rebuild(progress=bar.update)
    click.echo(f"rollups rebuilt: {count} referrals")


@analytics.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_context
def analytics_status(obj: Context, as_json: bool) -> None:
    """How far the rollup has read the event log."""
    import sqlalchemy as sa

    from referrals.store.schema import referral_events

    services = obj.services
    position = analytics_of(services).rollup.position()
    with services.db.read() as c:
        top = int(c.execute(sa.select(sa.func.coalesce(sa.func.max(referral_events.c.id), 0))
                            ).scalar_one())
    info = {"read_below": position.below, "highest_read": position.seen,
            "highest_event": top, "waiting_for": sorted(position.gaps or {}),
            "rebuilding": position.rebuilding}
    if as_json:
        print_json(info)
        return
    print_table(["", ""], [[k.replace("_", " "), v] for k, v in info.items()])
