"""Wiring of the scheduling adapter (scheduling/): its object, the referral listener, the
patient pages, the work handlers and tick, the connections to outreach (the booking-link
callable and the reply hook) and to the SMART app (the scheduling sections), and the
`refloop scheduling ...` commands. See docs/scheduling.md."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from refloop.context import Context, pass_context
from refloop.output import print_json
from refloop.referral_ids import REFERRAL
from refloop.wiring import Timer

if TYPE_CHECKING:
    from flask import Flask

    from referrals.worker import Handler
    from refloop.core_services import Services
    from scheduling.adapter import SchedulingAdapter

NAME = "scheduling"


def build(services: Services) -> None:
    from scheduling.adapter import SchedulingAdapter
    from scheduling.config import from_section
    from scheduling.context import Core

    settings = services.settings
    root = settings.config_file.parent if settings.config_file else Path.cwd()
    config = from_section(settings.section(NAME), root)
    core = Core(db=services.db, store=services.store, referrals=services.referrals,
                resources=services.resources, work=services.work, cursors=services.cursors,
                base_url=settings.base_url, tasks=getattr(services, "tasks", None),
                hooks=services.adapters.get("subscriptions"))
    adapter = SchedulingAdapter(core, config, authorizer_for=_authorizer_for(services))
    services.adapters[NAME] = adapter
    services.referrals.listeners.append(adapter.follower.on_transition)
    connect_outreach(services)


def connect_outreach(services: Services) -> None:
    """Give outreach our booking-link callable and reply hook (when outreach is wired)."""
    scheduling: SchedulingAdapter | None = services.adapters.get(NAME)
    outreach = services.adapters.get("outreach")
    if scheduling is None or outreach is None:
        return
    if hasattr(outreach, "issue_booking_link"):
        outreach.issue_booking_link = scheduling.issue_booking_link
    hooks = getattr(outreach, "reply_hooks", None)
    if isinstance(hooks, list) and scheduling.handle_reply not in hooks:
        hooks.append(scheduling.handle_reply)


def _authorizer_for(services: Services) -> Any:
    """The subscriptions adapter's Authorization for a configured FHIR server (SMART Backend
    Services), so the calendar is called with the same credentials as the EHR."""
    def authorizer(base: str) -> Any:
        subscriptions = services.adapters.get("subscriptions")
        if subscriptions is None:
            return None
        return subscriptions.client_for(base).authorize
    return authorizer


def adapter(services: Services) -> SchedulingAdapter:
    found: SchedulingAdapter = services.adapters[NAME]
    if found.core.hooks is None:
        found.core.hooks = services.adapters.get("subscriptions")
    return found


def routes(app: Flask, services: Services) -> None:
    from refloop import error_pages
    from scheduling.web import error_page, patient_blueprint

    connect_outreach(services)
    app.register_blueprint(patient_blueprint(adapter(services)))
    error_pages.register(app, "/p", error_page)
    smart = services.adapters.get("smart")
    if smart is not None and hasattr(smart, "scheduling"):
        from scheduling.coordinator import coordinator_port

        smart.scheduling = coordinator_port(adapter(services))


def work_handlers(services: Services) -> dict[str, Handler]:
    connect_outreach(services)  # again: outreach may be built after us
    found = adapter(services)
    return {"scheduling.tick": found.handle_tick,
            "scheduling.release": found.handle_release,
            "scheduling.check-booking": found.handle_check_booking,
            "scheduling.recovery": found.handle_recovery,
            "scheduling.noshow-task": found.handle_noshow_task,
            "scheduling.appointment": found.handle_appointment,
            "scheduling.answers": found.handle_answers,
            "scheduling.subscribe": found.handle_subscribe}


def timers(services: Services) -> list[Timer]:
    return [Timer("scheduling-tick", 60.0, "scheduling.tick")]


@click.group("scheduling")
def scheduling_group() -> None:
    """Patient self-scheduling: links, slots, reminders, publishers."""


@scheduling_group.command("link")
@click.argument("referral_id", type=REFERRAL)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def link(obj: Context, referral_id: str, as_json: bool) -> None:
    """Issue a patient link for REFERRAL_ID (printed once; only its hash is kept)."""
    url = adapter(obj.services).issue_booking_link(referral_id)
    if url is None:
        raise click.ClickException(
            "no link: the referral is unknown or finished, no [[scheduling.destinations]] "
            "entry matches it, or its Patient has no birthDate to check")
    if as_json:
        print_json({"referral_id": referral_id, "link": url})
    else:
        click.echo(url)


@scheduling_group.command("revoke")
@click.argument("referral_id", type=REFERRAL)
@pass_context
def revoke(obj: Context, referral_id: str) -> None:
    """Revoke every patient link of REFERRAL_ID."""
    count = adapter(obj.services).links.revoke_all(referral_id)
    click.echo(f"{count} link(s) revoked")


@scheduling_group.command("slots")
@click.argument("referral_id", type=REFERRAL)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def slots(obj: Context, referral_id: str, as_json: bool) -> None:
    """The next open slots for REFERRAL_ID, as the patient would see them."""
    from scheduling.booking import CannotBook

    try:
        found = adapter(obj.services).booker.find(referral_id)
    except CannotBook as exc:
        raise click.ClickException(str(exc)) from exc
    rows = [{"key": o.key, "start": o.start.isoformat(), "location": o.location,
             "clinician": o.clinician} for o in found.options]
    if as_json:
        print_json({"destination": found.destination.name, "slots": rows})
        return
    click.echo(f"destination {found.destination.name} ({found.destination.source})")
    for row in rows:
        click.echo(f"{row['start']}  {row['clinician'] or '-'}  {row['location'] or '-'}  "
                   f"{row['key']}")
    if not rows:
        click.echo("no open slots")


@scheduling_group.command("refresh")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def refresh(obj: Context, as_json: bool) -> None:
    """Read every SMART Scheduling Links publisher now (since its last manifest)."""
    from scheduling.sources.published import PublishedSlotSource

    found = adapter(obj.services)
    results = []
    for destination in found.config.destinations:
        source = found.sources.for_destination(destination)
        if isinstance(source, PublishedSlotSource):
            result = source.refresh(found.core.cursors, datetime.now(UTC))
            results.append({"destination": destination.name, **result.__dict__})
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for r in results:
        click.echo(f"{r['destination']}: {r['files']} files, {r['slots']} slots "
                   f"({'full' if r['full'] else 'since last'}); transactionTime "
                   f"{r['transaction_time']}")
    if not results:
        click.echo("no smart-links destinations configured")


@scheduling_group.command("subscribe")
@click.option("--fhir-base", required=True, help="The calendar's FHIR base URL.")
@pass_context
def subscribe(obj: Context, fhir_base: str) -> None:
    """Ask the calendar to notify us of no-shows and cancellations (a rest-hook Subscription
    on Appointment); run it while `refloop serve` is up."""
    found = adapter(obj.services)
    subscription_id = found.subscribe(fhir_base)
    click.echo(f"Subscription/{subscription_id} created on {fhir_base}")


@scheduling_group.command("replan")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def replan_command(obj: Context, as_json: bool) -> None:
    """Plan the reminders of every coming appointment again (after the ladders changed)."""
    import sys

    import sqlalchemy as sa

    from scheduling.appointments import ACTIVE
    from scheduling.replan import replan
    from scheduling.tables import appointments

    found = adapter(obj.services)
    with found.core.db.read() as conn:
        total = conn.execute(sa.select(sa.func.count()).where(
            appointments.c.status.in_(ACTIVE),
            appointments.c.start > datetime.now(UTC))).scalar_one()
    with click.progressbar(length=int(total), label="re-planning reminders",
                           file=sys.stderr) as bar:
        result = replan(found.core.db, found.config, progress=bar.update)
    if as_json:
        print_json(result.__dict__)
    else:
        click.echo(f"{result.appointments} appointments, {result.steps} reminder steps planned")


def commands() -> list[click.Command]:
    return [scheduling_group]


def run_demo_scheduling(services: Services, ehr_base: str, echo: Any = click.echo
                        ) -> dict[str, Any]:
    """The demo's scheduling step (scheduling/demo.py) with its own destination on the sandbox
    EHR: for the step, its adapter's listener stands in for the configured one."""
    from scheduling.adapter import SchedulingAdapter
    from scheduling.config import from_section
    from scheduling.demo import run_demo, section

    wired = adapter(services)
    demo = SchedulingAdapter(wired.core, from_section(section(ehr_base)))
    listeners = services.referrals.listeners
    at = listeners.index(wired.follower.on_transition) \
        if wired.follower.on_transition in listeners else None
    if at is None:
        listeners.append(demo.follower.on_transition)
    else:
        listeners[at] = demo.follower.on_transition
    try:
        return run_demo(demo, ehr_base, echo)
    finally:
        listeners.remove(demo.follower.on_transition)
        if at is not None:
            listeners.insert(at, wired.follower.on_transition)
