"""Wiring of the PAS adapter (pas_client/): the prior-authorization flow object, its work
handlers ("pas.submit", "pas.notification", "pas.inquire"), the follow-up timer, the
`refloop pas ...` commands and the demo's pend-then-approve run against the payer sandbox.
See docs/pas.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from refloop.context import Context, pass_context
from refloop.output import output_width, print_json, print_table
from refloop.referral_ids import REFERRAL, resolve_id
from refloop.wiring import Timer

if TYPE_CHECKING:
    from pas_client.coverage_check import CoverageCheck
    from pas_client.flow import PriorAuthFlow
    from referrals.worker import Handler
    from refloop.core_services import Services

NAME = "pas"


def build(services: Services) -> None:
    from pas_client.config import from_settings

    config = from_settings(services.settings.section("pas"),
                           services.settings.section("payers"))
    built = make_flow(services, config)
    services.adapters[NAME] = built
    services.referrals.listeners.append(coverage(built).on_transition)


def coverage(found: PriorAuthFlow) -> CoverageCheck:
    """The coverage check of a flow (authorization required?, eligibility, CRD); other
    adapters may ask it `authorization_gate(referral_id)` through wiring."""
    from pas_client.coverage_check import CoverageCheck

    if not isinstance(getattr(found, "coverage", None), CoverageCheck):
        found.coverage = CoverageCheck(found)  # type: ignore[attr-defined]
    checker: CoverageCheck = found.coverage  # type: ignore[attr-defined]
    return checker


def make_flow(services: Services, config: Any) -> PriorAuthFlow:
    from pas_client.flow import PriorAuthFlow
    from pas_client.store import PriorAuthStore

    return PriorAuthFlow(config=config, store=PriorAuthStore(services.db),
                         referrals=services.referrals, referral_store=services.store,
                         resources=services.resources, work=services.work,
                         hooks=services.adapters.get("subscriptions"),
                         tasks=getattr(services, "tasks", None),
                         quarantine=services.quarantine)


def flow(services: Services) -> PriorAuthFlow:
    found: PriorAuthFlow = services.adapters[NAME]
    if found.hooks is None:  # the subscriptions adapter may be built after us
        found.hooks = services.adapters.get("subscriptions")
    return found


def work_handlers(services: Services) -> dict[str, Handler]:
    return {"pas.submit": lambda item: flow(services).handle_submit(item),
            "pas.notification": lambda item: flow(services).handle_notification(item),
            "pas.inquire": lambda item: flow(services).handle_inquire(item),
            "pas.follow-up": lambda item: flow(services).handle_follow_up(item),
            "pas.coordinator-outcome":
                lambda item: flow(services).handle_coordinator_outcome(item),
            "pas.coverage": lambda item: coverage(flow(services)).handle_coverage(item),
            "pas.gate": lambda item: coverage(flow(services)).handle_gate(item)}


def authorization_gate(services: Services, referral_id: str) -> dict[str, Any]:
    """Plain data for other adapters (the outreach ladder): does the referral wait for prior
    authorization? {"requirement", "source", "auth_state", "waiting", "pending"}."""
    return coverage(flow(services)).authorization_gate(referral_id)


def referral_details(services: Services, referral_id: str) -> dict[str, Any]:
    """Sections of `refloop referrals show` and the referral page (pas_client/details.py)."""
    from pas_client.details import referral_details as details

    return details(flow(services).store, referral_id)


def timers(services: Services) -> list[Timer]:
    """Every minute: the $inquire that are due, and escalation past a payer's deadline."""
    return [Timer("pas-follow-up", 60.0, "pas.follow-up")]


@click.group("pas")
def pas() -> None:
    """Prior authorization (Da Vinci PAS): check, submit, follow, update, cancel."""


@pas.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--pas-version", "version", type=click.Choice(["2.0.1", "2.2.1"]),
              default="2.2.1", show_default=True)
@click.option("--kind", type=click.Choice(["request", "response", "inquiry-request",
                                           "inquiry-response"]), default="request",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def check(file: Path, version: str, kind: str, as_json: bool) -> None:
    """Run the pre-flight conformance check on a bundle FILE; exit 1 when it has errors."""
    from pas_client.conformance import check_bundle

    try:
        bundle = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{file}: not JSON ({exc}); pass a FHIR JSON Bundle") from exc
    findings = check_bundle(bundle, version, kind)
    errors = [f for f in findings if f.severity == "error"]
    warnings = [f for f in findings if f.severity == "warning"]
    unchecked = [f for f in findings if f.severity == "information"]
    if as_json:
        print_json({"file": str(file), "version": version, "errors": len(errors),
                    "warnings": len(warnings), "not_checked": len(unchecked),
                    "findings": [f.to_json() for f in findings]})
    else:
        for finding in [*errors, *warnings]:
            click.echo(str(finding))
        if unchecked:
            click.echo("not checked:")
            for finding in unchecked:
                click.echo(f"  {finding.path}: {finding.message}")
        click.echo(f"{file}: {len(errors)} errors, {len(warnings)} warnings, "
                   f"{len(unchecked)} rules not checked (PAS {version} {kind})")
    if errors:
        sys.exit(1)


@pas.command("sandbox")
@click.option("--port", default=8090, show_default=True, help="0 picks a free port.")
@click.option("--rules", "rules_file", type=click.Path(exists=True, path_type=Path),
              help="JSON rules: default, by_code, after_pend, pend_seconds, "
                   "notification_shape, version.")
def sandbox(port: int, rules_file: Path | None) -> None:
    """Run the PAYER SANDBOX (a fake payer for demos and tests) on 127.0.0.1."""
    import threading

    from pas_client.sandbox import SandboxRules, SandboxServer

    rules = SandboxRules.from_json(json.loads(rules_file.read_text("utf-8"))) \
        if rules_file else SandboxRules()
    server = SandboxServer(rules, port=port).start()
    click.echo(f"PAS payer sandbox (a fake payer, not a real one) at {server.url} "
               f"(PAS {rules.version}); Ctrl-C to stop.")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


@pas.command("submit")
@click.argument("referral_id", type=REFERRAL)
@click.option("--payer", help="The [[payers]] name (default: the referral's payer).")
@pass_context
def submit(obj: Context, referral_id: str, payer: str | None) -> None:
    """Queue a prior-authorization request for REFERRAL_ID (what the app's button does)."""
    from pas_client.config import ConfigError

    referral = _referral(obj, referral_id)
    try:
        chosen = flow(obj.services).config.payer(payer or referral.payer)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    live = flow(obj.services).live_request(referral.id, chosen.name)
    if live is not None:
        raise click.ClickException(
            f"referral {referral.id} already has a prior authorization with {chosen.name}: "
            f"request {live.id} is {live.status}; nothing queued (`refloop pas status "
            f"{referral.id}`, `refloop pas inquire {live.id}`; an update or cancel changes it)")
    flow(obj.services).enqueue_submit(referral.id, chosen.name)
    click.echo(f"queued: prior authorization of {referral.id} with {chosen.name}")


def _referral(obj: Context, referral_id: str) -> Any:
    found = obj.services.store.try_get(referral_id)
    if found is None:
        raise click.ClickException(f"no referral {referral_id}; `refloop referrals list` "
                                   "shows their ids")
    return found


@pas.command("status")
@click.argument("referral_id", type=REFERRAL)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def status(obj: Context, referral_id: str, as_json: bool) -> None:
    """Show the prior-authorization requests of REFERRAL_ID, their decisions, findings and
    the payer's replies."""
    referral = _referral(obj, referral_id)
    store = flow(obj.services).store
    requests = store.for_referral(referral.id)
    replies = store.replies(referral_id=referral.id)
    if as_json:
        print_json({"referral_id": referral.id, "requests": [{
            "id": r.id, "chain": r.chain_id, "kind": r.kind, "payer": r.payer,
            "status": r.status, "auth_number": r.auth_number, "decision": r.decision,
            "findings": r.findings, "error": r.last_error,
            "deadline": r.deadline_at.isoformat() if r.deadline_at else None,
            "next_check": r.next_check_at.isoformat() if r.next_check_at else None,
            "checks": r.checks,
            "escalated": r.escalated_at.isoformat() if r.escalated_at else None}
            for r in requests], "replies": [r.to_json() for r in replies]})
        return
    if not requests:
        click.echo(f"referral {referral.id}: no prior-authorization request yet")
    print_table(["request", "kind", "payer", "status", "auth number", "next check", "problem"],
                [[r.id[:8], r.kind, r.payer, r.status, r.auth_number,
                  r.next_check_at.strftime("%Y-%m-%d %H:%M") if r.next_check_at else "",
                  r.last_error or _first_error(r.findings)] for r in requests])
    if replies:
        click.echo("\nReplies from the payer (`refloop pas reply ID` shows one in full):")
        print_table(["reply", "request", "operation", "HTTP", "read as", "bytes", "note"],
                    [[r.id, (r.request_id or "")[:8], r.operation, r.http_status,
                      r.interpretation, len(r.body), r.note] for r in replies],
                    width=output_width())


def _first_error(findings: list[dict[str, Any]]) -> str:
    errors = [f for f in findings if f["severity"] == "error"]
    return f"{errors[0]['path']}: {errors[0]['message']}" if errors else ""


@pas.command("reply")
@click.argument("reply_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def reply(obj: Context, reply_id: int, as_json: bool) -> None:
    """Show one reply from a payer exactly as it was received (status, headers, body)."""
    found = flow(obj.services).store.try_get_reply(reply_id)
    if found is None:
        raise click.ClickException(f"no payer reply {reply_id}; `refloop pas status "
                                   "REFERRAL_ID` lists them")
    if as_json:
        print_json(found.to_json(body=True))
        return
    click.echo(f"reply {found.id} to {found.operation} (request {found.request_id or '-'}, "
               f"referral {found.referral_id or '-'}) from {found.payer}, received "
               f"{found.received_at.isoformat()}: read as {found.interpretation or '-'}"
               f"{': ' + found.note if found.note else ''}")
    click.echo(f"HTTP {found.http_status}")
    for name, value in found.headers.items():
        click.echo(f"{name}: {value}")
    click.echo("")
    click.echo(found.text(limit=10**9))


class RequestId(click.ParamType):
    """A prior-authorization request id, or a unique beginning of one (`refloop pas status`
    prints the first 8 characters)."""

    name = "REQUEST"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        obj = ctx.find_object(Context) if ctx is not None else None
        if obj is None:
            return str(value)
        store = flow(obj.services).store
        return resolve_id(str(value), exists=lambda i: store.try_get(i) is not None,
                          starting_with=store.ids_starting_with,
                          noun="prior-authorization request",
                          listing="`refloop pas status REFERRAL_ID` shows their ids")


@pas.command("inquire")
@click.argument("request_id", type=RequestId())
@click.option("--json", "as_json", is_flag=True)
@pass_context
def inquire(obj: Context, request_id: str, as_json: bool) -> None:
    """Ask the payer ($inquire) for the current decision of REQUEST_ID (user-initiated)."""
    pas_flow = flow(obj.services)
    found = pas_flow.store.try_get(request_id)
    if found is None:
        raise click.ClickException(f"no prior-authorization request {request_id}; see "
                                   "`refloop pas status REFERRAL_ID`")
    reading = pas_flow.inquire(found)
    about = [_about(pas_flow, found, d) for d in reading.decisions]
    status = (pas_flow.store.try_get(found.id) or found).status
    if as_json:
        print_json({"outcome": reading.outcome, "problem": reading.problem,
                    "status": status,
                    "decisions": [{**d.to_json(), "about": a}
                                  for d, a in zip(reading.decisions, about, strict=True)]})
        return
    for decision, said in zip(reading.decisions, about, strict=True):
        click.echo(f"{decision.summary()} ({said})")
    if reading.problem:
        click.echo(f"{reading.outcome}: {reading.problem}")
    click.echo(f"request {found.id}: {status}")


def _about(pas_flow: Any, request: Any, decision: Any) -> str:
    """Which of our requests an $inquire answer speaks of (the payer may list several)."""
    matched = pas_flow.match(decision, request.payer)
    if matched is None:
        return "no request of ours: not applied"
    return "this request" if matched.chain_id == request.chain_id else \
        f"request {matched.id}"


@pas.command("cancel")
@click.argument("chain_id", type=RequestId())
@pass_context
def cancel(obj: Context, chain_id: str) -> None:
    """Cancel a whole prior authorization (a Claim Update with certificationType 3); CHAIN_ID
    is any of its requests."""
    pas_flow = flow(obj.services)
    named = pas_flow.store.try_get(chain_id)
    request = pas_flow.update(named.chain_id if named else chain_id, cancel_all=True)
    click.echo(f"cancel request {request.id}: {request.status}")


@pas.command("coverage")
@click.argument("referral_id", type=REFERRAL)
@click.option("--check", "again", is_flag=True,
              help="Ask the payer again (eligibility, CRD) and apply the coverage table.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def coverage_command(obj: Context, referral_id: str, again: bool, as_json: bool) -> None:
    """Does REFERRAL_ID need prior authorization (and who says so), and the eligibility
    answer."""
    from pas_client.eligibility import summary

    referral = _referral(obj, referral_id)
    checker = coverage(flow(obj.services))
    if again:
        checker.check(referral)
        checker.gate(referral.id)
    found = flow(obj.services).store.coverage(referral.id)
    if found is None:
        raise click.ClickException(f"referral {referral.id} has not been checked yet; "
                                   "`refloop pas coverage REFERRAL_ID --check` checks it now")
    if as_json:
        print_json({**found, "checked_at": found["checked_at"].isoformat()})
        return
    click.echo(f"authorization {found['requirement'].replace('-', ' ')} ({found['source']})")
    eligibility = found.get("eligibility")
    if eligibility:
        click.echo("eligibility: " + (eligibility["error"] if "error" in eligibility
                                      else summary(eligibility)))
    for card in (found["detail"].get("crd") or {}).get("cards", []):
        click.echo(f"CRD card: {card['summary']}")


def commands() -> list[click.Command]:
    return [pas]


def _show_coverage(demo: PriorAuthFlow, referral: Any, echo: Any) -> None:
    from pas_client.eligibility import summary

    found = coverage(demo).check(referral)
    checked = demo.store.coverage(referral.id) or {}
    eligibility = checked.get("eligibility") or {}
    echo("eligibility: " + (eligibility.get("error") or summary(eligibility)))
    echo(f"authorization {found.status.replace('-', ' ')} ({found.source})")


#: the status of a registration whose server is gone for good (the demo's payer sandbox)
ENDED = "ended"


def _await_decision(flow: Any, worker: Any, request_id: str, seconds: float) -> Any:
    """The request once the payer's notification has been processed (stored by the hook
    endpoint, then handled here), or still pended after `seconds` when none came."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        worker.drain()
        request = flow.store.try_get(request_id)
        assert request is not None
        if request.status != "pended" or time.monotonic() > deadline:
            return request
        time.sleep(0.05)


def run_demo_prior_auth(services: Services, referral_id: str | None = None,
                        echo: Any = click.echo, notification_wait: float = 0.0
                        ) -> dict[str, Any]:
    """The demo: one accepted referral is checked (eligibility, CRD: authorization
    required?) and goes through a pend and an approval at the PAYER SANDBOX (started here on a
    free 127.0.0.1 port and stopped afterwards).

    The pended decision arrives as a subscription notification when the subscriptions hook
    endpoint is reachable (the demo serves it meanwhile; `notification_wait` seconds); otherwise
    the demo asks with $inquire. Either way the echo says which."""
    from pas_client.config import Organization, PasConfig, PayerConfig
    from pas_client.sandbox import SandboxRules, SandboxServer
    from referrals.model import Stage
    from referrals.worker import Worker
    from refloop.wiring import all_handlers

    referral = services.store.get(referral_id) if referral_id else next(
        (r for r in services.store.list(limit=1000) if r.stage == Stage.ACCEPTED), None)
    if referral is None:
        raise click.ClickException("no accepted referral for the prior-authorization demo")
    server = SandboxServer(SandboxRules(default="pend", after_pend="approve")).start()
    try:
        payer = PayerConfig(name=referral.payer or "Demo payer", base_url=server.url,
                            payer_id="DEMO-PAYER", organization_identifier="1234567893",
                            eligibility=True, crd_url=f"{server.url}/cds-services")
        config = PasConfig(organization=Organization("Refloop Demo Clinic", "1234567893",
                                                     "123456789"), payers=(payer,))
        demo = make_flow(services, config)
        demo.hooks = services.adapters.get("subscriptions")
        _show_coverage(demo, services.store.get(referral.id), echo)
        demo.enqueue_submit(referral.id, payer.name)
        handlers: dict[str, Handler] = {"pas.submit": demo.handle_submit,
                    "pas.notification": demo.handle_notification}
        Worker(services.work, handlers).drain()
        first = demo.store.for_referral(referral.id, payer.name)[-1]
        echo(f"prior authorization {first.id[:8]}: {first.status} "
             f"(referral {services.store.get(referral.id).stage.value})")
        server.state.rules.after_pend = "approve"
        from pas_client.sandbox.server import release_pended

        release_pended(server.state)
        # the hook endpoint stores the notification as subscriptions' work, forwarded to ours
        forward = {k: v for k, v in all_handlers(services).items()
                   if k == "subscriptions.notification"}
        request = _await_decision(demo, Worker(services.work, {**forward, **handlers}),
                                  first.id, notification_wait)
        by = "the payer's notification"
        if request.status == "pended":  # the notification could not reach us: ask
            by = "$inquire (no notification arrived)"
            demo.inquire(request)
            request = demo.store.try_get(first.id)
            assert request is not None
        final = services.store.get(referral.id)
        echo(f"prior authorization {request.id[:8]}: {request.status} "
             f"{request.auth_number} (referral {final.stage.value}), learnt from {by}")
        return {"referral_id": referral.id, "request_id": request.id,
                "status": request.status, "auth_number": request.auth_number,
                "stage": final.stage.value}
    finally:
        server.stop()
        _end_registrations(services, server.url)


def _end_registrations(services: Services, server_url: str) -> None:
    """The stopped payer sandbox's Subscription registration is ended, so `refloop subscriptions
    list` does not keep a dead endpoint among the live ones (`--all` still shows it)."""
    subs = services.adapters.get("subscriptions")
    if subs is None:
        return
    for row in subs.registry.rows(server=server_url):
        subs.registry.set_status(row.hook_id, ENDED)
