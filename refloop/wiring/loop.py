"""Wiring of the loop adapter (loop/): its object, the referral listener, the providers' pages,
the work handlers and the digest tick, what it takes from other adapters (the FHIR servers'
credentials from subscriptions, the v2 bridge's own outbound events, hooks for notifications),
the closed-loop section of a referral, and the `refloop loop ...` commands. See docs/loop.md."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from refloop.context import Context, pass_context
from refloop.output import print_json, print_table
from refloop.referral_ids import REFERRAL
from refloop.wiring import Timer

if TYPE_CHECKING:
    from flask import Flask

    from loop.adapter import LoopAdapter
    from referrals.worker import Handler
    from refloop.core_services import Services

NAME = "loop"


def build(services: Services) -> None:
    from loop.adapter import LoopAdapter
    from loop.config import from_section
    from loop.context import Core

    settings = services.settings
    core = Core(db=services.db, store=services.store, referrals=services.referrals,
                resources=services.resources, work=services.work, tasks=services.tasks,
                base_url=settings.base_url, quarantine=services.quarantine,
                authorizer_for=_authorizer_for(services),
                v2_stage_events=_v2_stage_events(services))
    adapter = LoopAdapter(core, from_section(settings.section(NAME)))
    services.adapters[NAME] = adapter
    services.referrals.listeners.append(adapter.follower.on_transition)


def adapter(services: Services) -> LoopAdapter:
    found: LoopAdapter = services.adapters[NAME]
    if found.core.hooks is None:
        found.core.hooks = services.adapters.get("subscriptions")
    return found


def _authorizer_for(services: Services) -> Any:
    """The subscriptions adapter's Authorization for a FHIR server it is configured for (SMART
    Backend Services); None for others (open servers)."""
    def authorizer(base: str) -> Any:
        subscriptions = services.adapters.get("subscriptions")
        if subscriptions is None:
            return None
        return subscriptions.client_for(base).authorize
    return authorizer


def _v2_stage_events(services: Services) -> Any:
    def events(partner: str) -> frozenset[str]:
        bridge = services.adapters.get("hl7")
        return bridge.stage_events(partner) if bridge is not None else frozenset()
    return events


def routes(app: Flask, services: Services) -> None:
    from loop.portal import Portal
    from loop.web import error_page, loop_blueprint, oversized_upload
    from refloop import error_pages, oversized

    found = adapter(services)
    portal = Portal(found.core, found.config, found.links, found.deliveries)
    app.register_blueprint(loop_blueprint(portal))
    error_pages.register(app, "/loop", error_page)
    oversized.register(app, "/loop", oversized_upload(portal))


def work_handlers(services: Services) -> dict[str, Handler]:
    return adapter(services).handlers()


def timers(services: Services) -> list[Timer]:
    from loop.digest import TICK_KIND

    return [Timer("loop-digest", 300.0, TICK_KIND)]


def referral_details(services: Services, referral_id: str) -> dict[str, Any]:
    """The closed-loop section of `refloop referrals show` and the referral page."""
    from loop.status import status_of

    shown = status_of(adapter(services), referral_id)
    if not shown["rows"]:
        return {}
    return {"closed_loop": ([shown], (["what", "state", "detail"], shown["rows"]))}


# -- commands ---------------------------------------------------------------------------------

@click.group(NAME)
def loop_group() -> None:
    """Closing the loop: chasing consult notes, updates to referrers, program clocks."""


@loop_group.command("status")
@click.argument("referral_id", type=REFERRAL)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def status(obj: Context, referral_id: str, as_json: bool) -> None:
    """The chase of REFERRAL_ID's consult note, its updates to the referrer, the note's
    delivery and receipt, and its program clocks."""
    from loop.status import status_of
    from referrals.errors import NotFound

    try:
        shown = status_of(adapter(obj.services), referral_id)
    except NotFound as exc:
        raise click.ClickException(f"{exc}; 'refloop referrals list' shows their ids") from exc
    if as_json:
        print_json({k: v for k, v in shown.items() if k != "rows"})
        return
    if not shown["rows"]:
        click.echo("nothing yet: no chase, update, delivery or clock for this referral")
        return
    print_table(["what", "state", "detail"], shown["rows"])


@loop_group.command("subscribe")
@click.option("--fhir-base", required=True, help="The specialist's FHIR base URL.")
@pass_context
def subscribe(obj: Context, fhir_base: str) -> None:
    """Ask a specialist's FHIR server to notify us of consult notes (DocumentReference) and
    finished visits (Encounter); run it while `refloop serve` is up."""
    made = adapter(obj.services).notes.subscribe(fhir_base)
    click.echo(f"Subscriptions {', '.join(made)} created on {fhir_base}")


@loop_group.command("upload-link")
@click.argument("referral_id", type=REFERRAL)
@pass_context
def upload_link(obj: Context, referral_id: str) -> None:
    """A new link for the specialist's office to upload REFERRAL_ID's consult note (printed
    once; only its hash is kept)."""
    from loop.links import UPLOAD

    found = adapter(obj.services)
    referral = found.core.store.try_get(referral_id)
    if referral is None or referral.terminal:
        raise click.ClickException("no link: the referral is unknown or finished")
    token = found.links.issue(referral_id, UPLOAD, datetime.now(UTC))
    click.echo(f"{found.core.base_url}/loop/u/{token}")


@loop_group.command("digest")
@click.option("--send", is_flag=True, help="Hand every referrer's digest to the mail now.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def digest(obj: Context, send: bool, as_json: bool) -> None:
    """The email updates waiting for each referrer's daily digest (--send: send them now)."""
    found = adapter(obj.services)
    if send:
        handed = found.digests.run(datetime.now(UTC), force=True)
        click.echo(json.dumps(handed) if as_json else
                   f"{len(handed)} digest(s) handed to the mail channel")
        return
    rows = []
    with found.core.db.read() as conn:
        for referrer in found.config.referrers:
            if referrer.channel == "email":
                rows += [{"referrer": referrer.name, "referral_id": r.referral_id,
                          "milestone": r.milestone, "text": r.text,
                          "at": r.created_at.isoformat()}
                         for r in found.referrers.waiting(referrer.name, conn)]
    if as_json:
        print_json(rows)
    elif rows:
        print_table(["referrer", "referral", "milestone", "update"],
                    [[r["referrer"], r["referral_id"], r["milestone"], r["text"]] for r in rows])
    else:
        click.echo("no email updates waiting")


@loop_group.command("clocks")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def clocks(obj: Context, as_json: bool) -> None:
    """Program clocks still running (TEAM, ASM), due soonest first."""
    from loop.status import running_clocks

    rows = running_clocks(adapter(obj.services))
    if as_json:
        print_json(rows)
    elif rows:
        print_table(["referral", "program", "due (UTC)"],
                    [[r["referral_id"], r["program"], r["due_at"][:16]] for r in rows])
    else:
        click.echo("no program clock is running")


def commands() -> list[click.Command]:
    return [loop_group]
