"""Wiring of the subscriptions adapter: the adapter object, the hook endpoint and JWKS routes,
its work handlers, the reconciliation timer and the `register`, `subscriptions list` and
`reconcile` commands. See refloop/wiring/__init__.py and docs/subscriptions.md."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from refloop.context import Context, pass_context
from refloop.output import output_width, print_json, print_table
from refloop.wiring import Timer

if TYPE_CHECKING:
    from flask import Flask

    from referrals.worker import Handler
    from refloop.core_services import Services
    from subscriptions.adapter import SubscriptionsAdapter
    from subscriptions.hook_edge import HookRoute

NAME = "subscriptions"


def build(services: Services) -> None:
    from subscriptions.adapter import Core, SubscriptionsAdapter
    from subscriptions.config import parse_fhir_servers, parse_subscriptions_config

    settings = services.settings
    core = Core(db=services.db, store=services.store, referrals=services.referrals,
                resources=services.resources, inbox=services.inbox, work=services.work,
                cursors=services.cursors, base_url=settings.base_url)
    services.adapters[NAME] = SubscriptionsAdapter(
        core, parse_fhir_servers(settings.section("fhir_servers")),
        parse_subscriptions_config(settings.section("subscriptions")))


def adapter(services: Services) -> SubscriptionsAdapter:
    found: SubscriptionsAdapter = services.adapters[NAME]
    return found


def routes(app: Flask, services: Services) -> None:
    from flask import jsonify

    from subscriptions.endpoint import hooks_blueprint

    subs = adapter(services)
    app.register_blueprint(hooks_blueprint(subs.endpoint))

    @app.get("/.well-known/jwks.json")
    def jwks() -> Any:
        return jsonify(subs.jwks())


def edge_routes(services: Services) -> list[HookRoute]:
    """`/hooks/` is answered by the HTTP edge itself (subscriptions/hook_edge.py): decided on
    the headers, stored by the loop's group commit; other URLs under it go on to Flask."""
    from subscriptions.hook_edge import HookRoute

    return [HookRoute(adapter(services).endpoint)]


def work_handlers(services: Services) -> dict[str, Handler]:
    subs = adapter(services)
    # the handler object itself: the worker calls its `prepare` (concurrent EHR re-reads)
    return {"subscriptions.notification": subs.notifications,
            "subscriptions.reconcile": subs.handle_reconcile,
            "subscriptions.events": subs.handle_events,
            "subscriptions.reconcile-due": subs.handle_reconcile_due}


def timers(services: Services) -> list[Timer]:
    """One tick for all servers (each is polled when its poll_interval has passed), and the
    start-up catch-up: an item of its own each time a worker starts, which polls every server
    whatever the tick did before the restart."""
    servers = adapter(services).servers
    every = max(15.0, min((s.poll_interval for s in servers), default=300.0))
    return [Timer("subscriptions-reconcile", every, "subscriptions.reconcile-due",
                  at_start=True)]


@click.command("register")
@click.option("--fhir-base", required=True, help="FHIR base URL of the EHR server.")
@click.option("--auth", type=click.Choice(["none", "backend-services"]), default=None,
              help="How to call the server (default: its [[fhir_servers]] entry, else none).")
@click.option("--criteria", default=None,
              help="Subscription criteria, e.g. 'ServiceRequest?intent=order' (default: the "
                   "server's entry, else that).")
@click.option("--category", "categories", multiple=True, metavar="SYSTEM|CODE",
              help="A ServiceRequest category that marks a referral; repeat for several "
                   "(default: http://snomed.info/sct|3457005, patient referral). "
                   "--category '' detects every category.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def register(obj: Context, fhir_base: str, auth: str | None, criteria: str | None,
             categories: tuple[str, ...], as_json: bool) -> None:
    """Register Refloop on a FHIR server: choose the flavour and create our Subscription.

    Run it while `refloop serve` is up: topic-based servers send a handshake to our endpoint.
    The report says which ServiceRequests will become referrals.
    """
    from subscriptions.config import ConfigError

    if criteria is not None and not criteria.startswith("ServiceRequest"):
        raise click.BadParameter("must look like ServiceRequest?param=value",
                                 param_hint="--criteria")
    try:
        outcome = adapter(obj.services).register(
            fhir_base, auth, criteria=criteria,
            categories=[c for c in categories if c] if categories else None)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        print_json(outcome.to_dict())
        return
    click.echo(f"{outcome.server}: {outcome.flavour} ({outcome.why})")
    if outcome.subscription_id:
        click.echo(f"Subscription/{outcome.subscription_id} status {outcome.status}"
                   f"{' (reused)' if outcome.reused else ''}; endpoint {outcome.endpoint}")
    click.echo(f"criteria {outcome.criteria}: {outcome.detects}")
    if outcome.detail:
        click.echo(outcome.detail)


@click.group("subscriptions")
def subscriptions_group() -> None:
    """Our registrations on FHIR servers."""


@subscriptions_group.command("list")
@click.option("--all", "show_all", is_flag=True,
              help="Also the ended registrations (servers that are gone, such as the demo's "
              "stopped payer sandbox).")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def subscriptions_list(obj: Context, show_all: bool, as_json: bool) -> None:
    """Each registration with its health (last notification, last event number, errors)."""
    everything = adapter(obj.services).registrations()
    rows = everything if show_all else [r for r in everything if r.status != "ended"]
    if len(rows) < len(everything) and not as_json:
        click.echo(f"({len(everything) - len(rows)} ended registration(s) not shown; --all "
                   "shows them)", err=True)
    if as_json:
        print_json([r.to_dict() for r in rows])
        return
    if not rows:
        click.echo("no registrations; run 'refloop register --fhir-base URL'")
        return
    print_table(["server", "purpose", "flavour", "subscription", "status", "last notification",
                 "event #", "count", "errors", "last error"],
                [[r.server, r.purpose, r.flavour, r.subscription_id or "-", r.status,
                  r.last_notification_at.strftime("%Y-%m-%d %H:%M:%S")
                  if r.last_notification_at else "-", r.last_event_number or "-",
                  r.notifications, r.errors, r.last_error or ""] for r in rows],
                    width=output_width())


@subscriptions_group.command("rotate-secret")
@click.argument("hook_id")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def subscriptions_rotate_secret(obj: Context, hook_id: str, as_json: bool) -> None:
    """Give a registration's hook a new secret and put it in the Subscription on the server.

    The previous secret is still accepted for [subscriptions] rotate_grace_seconds, so
    notifications already on their way are not refused. The secret itself is never printed.
    (An id that starts with "-", made before such ids were avoided: put -- before it.)
    """
    subs = adapter(obj.services)
    hook = subs.rotate_secret(hook_id)
    until = hook.previous_until.isoformat(timespec="seconds") if hook.previous_until else ""
    if as_json:
        print_json({"hook_id": hook.id, "server": hook.server,
                    "subscription_id": hook.subscription_id, "previous_accepted_until": until})
        return
    click.echo(f"hook {hook.id[:6]}: new secret set in Subscription/{hook.subscription_id} on "
               f"{hook.server}; the previous secret is accepted until {until}")


@click.command("reconcile")
@click.option("--fhir-base", required=True, help="FHIR base URL of the EHR server.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def reconcile(obj: Context, fhir_base: str, as_json: bool) -> None:
    """Catch up with the server now: read ServiceRequests changed since the cursor."""
    subs = adapter(obj.services)
    with click.progressbar(length=0, label=f"Reading {fhir_base}", file=sys.stderr,
                           show_pos=True) as progress:
        def on_page(page: int, matches: int) -> None:
            progress.length = page
            progress.update(1)
            progress.label = f"Reading {fhir_base} (page {page}, {matches} matches)"

        result = subs.reconcile(fhir_base, on_page)
    if as_json:
        print_json(result.to_dict())
        return
    summary = ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items())) or "nothing new"
    click.echo(f"{result.server}: {result.pages} pages, {result.seen} ServiceRequests "
               f"({summary}); cursor now {result.cursor}")


def commands() -> list[click.Command]:
    return [register, subscriptions_group, reconcile]
