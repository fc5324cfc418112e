"""Wiring of the outreach adapter (outreach/): its runtime, the referral listener that starts and
stops ladders, the webhooks, the work handlers (outreach.message is the kind any adapter enqueues
to reach a patient), the `refloop outreach ...` commands, and the demo's outreach run.
See docs/outreach.md."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import click

from referrals.ids import short_id
from refloop.context import Context, pass_context
from refloop.output import output_width, print_json, print_table
from refloop.referral_ids import REFERRAL

if TYPE_CHECKING:
    from flask import Flask

    from outreach.runtime import Runtime
    from referrals.worker import Handler
    from refloop.core_services import Services

NAME = "outreach"
KINDS = ("outreach.message", "outreach.start", "outreach.rung", "outreach.stop",
         "outreach.status", "outreach.inbound", "outreach.task-outcome",
         "outreach.provider-email")


def build(services: Services) -> None:
    rt = make_runtime(services)
    services.adapters[NAME] = rt
    services.referrals.listeners.append(lambda conn, change: _listen(rt, conn, change))


def make_runtime(services: Services, config: Any = None) -> Runtime:
    from outreach.config import from_settings
    from outreach.runtime import Runtime
    from outreach.store import OutreachStore
    from outreach.tokens import load_secret

    settings = services.settings
    config = config or from_settings(settings.section(NAME), settings.var_dir, settings.base_url)
    config = _tenant_senders(services, config)
    assert config.secret_file is not None
    return Runtime(config=config, db=services.db, store=services.store,
                   referrals=services.referrals, resources=services.resources,
                   work=services.work, inbox=services.inbox, tasks=services.tasks,
                   ostore=OutreachStore(services.db), channels=make_channels(config),
                   secret=load_secret(config.secret_file),
                   authorization_gate=_authorization_gate(services))


def _tenant_senders(services: Services, config: Any) -> Any:
    """Each [[outreach.twilio.senders]] that lists no sources takes its tenant's from
    [[access.tenants]] (the one place tenants are defined)."""
    from outreach.config import with_tenant_sources

    if not config.twilio.senders:
        return config
    from refloop.wiring.access import access_of

    tenants = {t.name: t.sources for t in access_of(services).config.tenants}
    return with_tenant_sources(config, tenants)


def _authorization_gate(services: Services) -> Any:
    """PAS's answer to "does this referral wait for authorization?", when PAS has payers."""
    from refloop.wiring.pas import authorization_gate

    found = services.adapters.get("pas")
    if found is None or not found.config.payers:
        return None
    return lambda referral_id: authorization_gate(services, referral_id)


def make_channels(config: Any) -> dict[str, Any]:
    channels: dict[str, Any] = {}
    if config.twilio.configured:
        from outreach.channels.twilio import TwilioSms, TwilioVoice, make_client

        client = make_client(config.twilio)
        channels["sms"] = TwilioSms(config.twilio, client)
        if config.twilio.calls:
            channels["voice"] = TwilioVoice(config.twilio, client)
    if config.smtp.configured:
        from outreach.channels.email import SmtpEmail

        channels["email"] = SmtpEmail(config.smtp)
    return channels


def runtime(services: Services) -> Runtime:
    found: Runtime = services.adapters[NAME]
    return found


def _listen(rt: Runtime, conn: Any, change: Any) -> None:
    if rt.config.enabled:
        from outreach.engine import on_transition

        on_transition(rt, conn, change)


def routes(app: Flask, services: Services) -> None:
    from outreach.web import outreach_blueprint, unsubscribe_error_page
    from refloop import error_pages

    app.register_blueprint(outreach_blueprint(runtime(services)))
    error_pages.register(app, "/outreach/unsubscribe", unsubscribe_error_page)


def work_handlers(services: Services) -> dict[str, Handler]:
    from outreach import callbacks, engine, provider_mail, replies

    rt = runtime(services)
    return {
        "outreach.message": lambda item: engine.handle_message(rt, item),
        "outreach.provider-email": lambda item: provider_mail.handle(rt, item),
        "outreach.start": lambda item: engine.handle_start(rt, item),
        "outreach.rung": lambda item: engine.handle_rung(rt, item),
        "outreach.stop": lambda item: engine.handle_stop(rt, item),
        "outreach.task-outcome": lambda item: engine.handle_task_outcome(rt, item),
        "outreach.status": lambda item: callbacks.handle_status(rt, item),
        "outreach.inbound": lambda item: replies.handle_inbound(rt, item),
    }


def referral_details(services: Services, referral_id: str) -> dict[str, Any]:
    """The outreach section of `refloop referrals show`."""
    rt = runtime(services)
    messages = rt.ostore.messages_for(referral_id)
    if not messages:
        return {}
    data = [{"id": m.id, "direction": m.direction, "channel": m.channel, "purpose": m.purpose,
             "status": m.status, "rule": m.rule, "reason": m.reason,
             "created_at": m.created_at.isoformat(),
             "sent_at": m.sent_at.isoformat() if m.sent_at else None} for m in messages]
    rows = [[m.created_at.strftime("%Y-%m-%d %H:%M"), "in" if m.direction == "in" else "out",
             m.channel, m.purpose, m.status, (m.reason or m.body)] for m in messages]
    return {"outreach": (data, (["at (UTC)", "dir", "channel", "purpose", "status", "why"],
                                rows))}


# -- commands ---------------------------------------------------------------------------------

@click.group(NAME)
def outreach_group() -> None:
    """Patient outreach: ladders, test sends, opt-outs, the Twilio sandbox."""


@outreach_group.command("plan")
@click.argument("referral_id", type=REFERRAL)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def plan(obj: Context, referral_id: str, as_json: bool) -> None:
    """The ladder REFERRAL_ID is on, what ran, and what happens next and why."""
    from outreach.planview import explain
    from referrals.errors import NotFound

    rt = runtime(obj.services)
    try:
        shown = explain(rt, referral_id)
    except NotFound as exc:
        raise click.ClickException(f"{exc}; 'refloop referrals list' shows their ids") from exc
    if as_json:
        print_json(shown)
        return
    click.echo(shown["summary"])
    if shown["rungs"]:
        print_table(["#", "channel", "template", "due (UTC)", "state"],
                    [[r["index"] + 1, r["channel"], r["template"], r["due"][:16].replace("T", " "),
                      r["state"]] for r in shown["rungs"]])
    click.echo(shown["next"])


@outreach_group.command("due")
@click.option("--hours", default=24.0, show_default=True, help="How far ahead to look.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def due(obj: Context, hours: float, as_json: bool) -> None:
    """What every active ladder does next within --hours, and what the rules decide for it."""
    from datetime import UTC, datetime, timedelta

    from outreach.dailyplan import decide_due

    found = decide_due(runtime(obj.services), datetime.now(UTC), timedelta(hours=hours))
    rows: list[dict[str, Any]] = [{
        "referral_id": d.referral_id, "rung": d.rung + 1, "channel": d.channel,
        "template": d.template, "due": d.due.astimezone(UTC).isoformat(),
             "decision": d.decision.outcome if d.decision else "task" if d.channel == "task"
             else "fail", "rule": d.decision.rule if d.decision else "",
             "why": d.decision.reason if d.decision else ""} for d in found]
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo(f"nothing due in the next {hours:g} h")
        return
    print_table(["referral", "rung", "channel", "due (UTC)", "decision", "why"],
                [[short_id(r["referral_id"]), r["rung"], r["channel"],
                  r["due"][:16].replace("T", " "), r["decision"], r["why"] or ""] for r in rows],
                width=output_width())


@outreach_group.command("send-test")
@click.option("--to", "to", required=True, help="A phone number (SMS) or an email address.")
@click.option("--voice", is_flag=True, help="Place a test call instead of a text.")
@click.option("--tenant", default="", help="Send from this tenant's Twilio sender "
              "([[outreach.twilio.senders]]).")
@pass_context
def send_test(obj: Context, to: str, voice: bool, tenant: str) -> None:
    """Send one test message through the configured channel, for IT teams."""
    from outreach.sendtest import send_test as run

    try:
        click.echo(run(runtime(obj.services), to, voice=voice, tenant=tenant))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


@outreach_group.command("optouts")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def optouts(obj: Context, as_json: bool) -> None:
    """Patients and addresses that opted out, per channel, with when and how."""
    from outreach.planview import current_optouts

    found = current_optouts(runtime(obj.services))
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo("no opt-outs")
        return
    print_table(["patient", "channel", "address", "since (UTC)", "how"],
                [[o["patient"] or "-", o["channel"], o["address"] or "(every address)",
                  o["since"][:16].replace("T", " "), o["source"]] for o in found])


@outreach_group.command("sandbox")
@click.option("--port", default=0, show_default=True, help="Port of the Twilio sandbox "
              "(0 picks a free one).")
@click.option("--inbound-url", default="", help="Where simulated replies go (default: this "
              "server's /outreach/twilio/sms).")
@pass_context
def sandbox(obj: Context, port: int, inbound_url: str) -> None:
    """Run THE TWILIO SANDBOX (a fake SMS/voice gateway) and a capturing SMTP server."""
    from outreach.sandbox import MailCapture, SandboxRules, TwilioSandbox

    base = obj.settings.base_url
    twilio = TwilioSandbox(rules=SandboxRules(inbound_url=inbound_url or
                                              f"{base}/outreach/twilio/sms"), port=port).start()
    mail = MailCapture().start()
    click.echo("Twilio sandbox (a fake gateway, not Twilio) and an SMTP capture are running.\n"
               "Configure refloop.toml with:\n"
               f"  [outreach.twilio]\n  account_sid = \"{twilio.account_sid}\"\n"
               f"  auth_token = \"{twilio.auth_token}\"\n  from_number = \"+15005550006\"\n"
               f"  api_base_url = \"{twilio.url}\"\n  [outreach.smtp]\n  host = \"127.0.0.1\"\n"
               f"  port = {mail.port}\n  security = \"none\"\n"
               "  from_address = \"clinic@refloop.test\"\n"
               f"Simulate a reply: POST {twilio.url}/_sandbox/reply "
               "{\"from\": \"+1...\", \"body\": \"STOP\"}\nCtrl-C to stop.")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        twilio.stop()
        mail.stop()


def commands() -> list[click.Command]:
    return [outreach_group]


def run_demo_outreach(services: Services, echo: Any = click.echo) -> dict[str, Any]:
    from outreach.demo import run_demo
    from refloop.app import create_app

    return run_demo(services, make_runtime, echo, make_app=lambda: create_app(services),
                    handlers=lambda: work_handlers(services))
