"""`refloop demo`: load the demo referrals, drive them through the lifecycle, show the worklist
and the funnel, then leave the server running with the Task facade on 127.0.0.1.

With `--ehr sekmet` (the default) the just-detected referrals of the fixture do not start in
Refloop: a sandbox EHR (sekmet-fhir, the venv's `sekmet serve`, a subprocess on 127.0.0.1 with its
data under var/demo-ehr and its simulator disabled) receives their patients, coverage and
ServiceRequests, Refloop registers a Subscription on it, and the referrals arrive through the real
notification path (hook endpoint, inbox, work queue, re-read from the EHR).

The fixture and its loading are in refloop/demo_data.py; the peers the demo runs (sandbox EHR,
demo EHR, the HTTP edge during the report) in refloop/demo_peers.py."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from datetime import UTC, datetime
from typing import Any

import click

from referrals.analytics import fall_out, funnel
from referrals.ids import short_id
from referrals.model import Command, Referral, Stage
from referrals.sla import describe_due
from refloop.context import Context, pass_context
from refloop.demo_data import (
    COORDINATOR,
    FIXTURES,
    V2_REFERRAL,
    load_referral,
)
from refloop.demo_peers import (
    EdgeListener,
    SandboxEhr,
    run_sandbox_ehr,
    start_demo_ehr,
)
from refloop.output import bar, print_table
from refloop.schema import ensure_schema

PRIORITY_RANK = {"stat": 0, "asap": 1, "urgent": 2, "routine": 3}


@click.command()
@click.option("--serve/--no-serve", default=True, show_default=True,
              help="Leave the server running afterwards.")
@click.option("--ehr", type=click.Choice(["sekmet", "hapi", "none"]), default="sekmet",
              show_default=True, help="Sandbox EHR the new referrals arrive from (hapi: the "
              "HAPI FHIR server of interop/hapi, needs Java 17 and Maven; none: all demo "
              "referrals are loaded directly).")
@pass_context
def demo(obj: Context, serve: bool, ehr: str) -> None:
    """Run the demo on the embedded default (SQLite under var/)."""
    from refloop.settings import check_serving

    if serve:
        check_serving(obj.settings)
    ensure_schema(obj.settings)
    services = obj.services
    if "REFLOOP_LOG_LEVEL" not in os.environ:  # the report is for people; the server logs later
        logging.getLogger().setLevel(logging.WARNING)
    items = json.loads(FIXTURES.read_text(encoding="utf-8"))
    from_ehr = [i for i in items if not i["path"]] if ehr != "none" else []
    local = [i for i in items if i not in from_ehr]
    created = 0
    with click.progressbar(local, label="Driving demo referrals through the lifecycle",
                           file=sys.stderr) as progress:
        for item in progress:
            created += load_referral(services, item)
    click.echo(f"\n{created} new referrals ({len(local) - created} already there).")
    sandbox = run_sandbox_ehr(services, from_ehr, ehr) if from_ehr else None
    stop_later: list[Any] = []
    try:
        v2_referral = send_v2_referral(services)
        try:  # the payer's notification reaches the hook endpoint
            listener: EdgeListener | None = EdgeListener(services)
        except click.ClickException:
            listener = None  # port busy: the demo asks the payer with $inquire instead
        try:
            show_prior_authorization(services, v2_referral, wait=5.0 if listener else 0.0)
        finally:
            if listener is not None:
                listener.stop()
        show_outreach(services)
        show_scheduling(services, sandbox.base if sandbox is not None else None)
        show_worklist(services)
        show_funnel(services)
        if serve:
            from refloop import roles

            url = obj.settings.base_url
            launch_ehr = start_demo_ehr(obj.settings)
            stop_later.append(launch_ehr.stop)
            click.echo(f"\nOpen the app: {launch_ehr.base}/launch-refloop\n  (the demo EHR "
                       "launches Refloop's SMART app as Casey Coordinator: the worklist)")
            click.echo(f"Server: {url}/ (what Refloop is, links)   Task facade: {url}/fhir/Task"
                       f"   CapabilityStatement: {url}/fhir/metadata")
            show_api_access(services, url)
            if sandbox is not None:
                where = f"console {sandbox.root}/ui" if isinstance(sandbox, SandboxEhr) \
                    else f"HAPI FHIR, log {sandbox.log}"
                click.echo(f"Sandbox EHR: {sandbox.base} ({where}); "
                           "ServiceRequests created there become referrals here.")
            log_file = _server_log_file(obj.settings)
            click.echo(f"Server logs: {log_file}\nPress Ctrl-C to stop.")
            base = ["--config", str(obj.config)] if obj.config else []
            code = roles.supervise(base, ["web", "worker", *roles.adapter_role_names(
                obj.settings)])
            sys.exit(code)
    finally:
        for stop in stop_later:
            stop()
        if sandbox is not None:
            sandbox.stop()


def _server_log_file(settings: Any) -> str:
    """The server the demo leaves running logs to a file (the terminal keeps the report),
    unless log_file says otherwise."""
    if settings.log_file:
        return "stderr" if settings.log_file == "-" else str(settings.log_file)
    path = settings.var_dir / "log" / "refloop.log"
    os.environ["REFLOOP_LOG_FILE"] = str(path)
    return str(path)


def show_outreach(services: Any) -> None:
    """Patient outreach against the Twilio sandbox (refloop/wiring/outreach.py)."""
    from refloop.wiring.outreach import run_demo_outreach

    run_demo_outreach(services)


def show_scheduling(services: Any, ehr_base: str | None) -> None:
    """Self-scheduling on a calendar of the sandbox EHR (refloop/wiring/scheduling.py)."""
    if ehr_base is None:
        click.echo("\nSelf-scheduling: skipped (it books on the sandbox EHR's calendar; run "
                   "without --ehr none)")
        return
    from referrals.errors import PeerError
    from refloop.wiring.scheduling import run_demo_scheduling

    try:
        run_demo_scheduling(services, ehr_base)
    except PeerError as exc:
        click.echo(f"\nSelf-scheduling: skipped, the sandbox EHR refused the calendar: {exc}")


def show_api_access(services: Any, url: str) -> None:
    """The facade needs a bearer token: the demo registers a client and says how to get one."""
    from refloop.wiring.access import ensure_demo_client

    client_id, key = ensure_demo_client(services)
    click.echo("The Task facade needs a bearer token. The demo registered the API client "
               f"'demo-reader' (system/Task.rs); in another shell:\n"
               f"  TOKEN=$(refloop clients token --client-id {client_id} --key {key})\n"
               f"  curl -H \"Authorization: Bearer $TOKEN\" {url}/fhir/Task?_count=5")


def show_prior_authorization(services: Any, referral: Referral | None = None,
                             wait: float = 0.0) -> None:
    """One accepted referral (the v2 one when given) through Da Vinci PAS at the payer
    sandbox: pend, then approval."""
    from refloop.wiring.pas import run_demo_prior_auth

    click.echo("\nPrior authorization (Da Vinci PAS, payer sandbox):")
    if referral is not None and referral.stage != Stage.ACCEPTED:
        click.echo(f"  the HL7 v2 referral went through it on an earlier run "
                   f"(now {referral.stage.value}, prior authorization {referral.auth_state})")
        return
    try:
        run_demo_prior_auth(services, referral.id if referral else None,
                            notification_wait=wait)
    except click.ClickException as exc:
        click.echo(f"  skipped: {exc.message}")


def send_v2_referral(services: Any) -> Referral | None:
    """A legacy EHR sends one referral as HL7 v2: REF^I12 over MLLP to the listener (on a free
    127.0.0.1 port for the demo), which stores and acknowledges it; the bridge maps it (Patient,
    practitioners, ServiceRequest, and the Coverage and payer from IN1) and a coordinator
    accepts it. Returns the referral (None when the bridge is not wired)."""
    from dataclasses import replace

    from hl7_bridge.client import MllpClient
    from hl7_bridge.listener import run_listener
    from referrals.worker import Worker
    from refloop.wiring import all_handlers

    adapter = services.adapters.get("hl7")
    if adapter is None:
        return None
    click.echo("\nHL7 v2 referral from a legacy EHR (REF^I12 over MLLP):")
    config = replace(adapter.config, host="127.0.0.1", port=0)
    stop, ready, port = threading.Event(), threading.Event(), list[int]()
    thread = threading.Thread(target=run_listener, args=(config, adapter.intake, stop, ready,
                                                        port), daemon=True)
    thread.start()
    try:
        if not ready.wait(15):
            raise click.ClickException("the demo MLLP listener did not start")
        with MllpClient("127.0.0.1", port[0], timeout=15) as client:
            ack = client.send(V2_REFERRAL.read_bytes())
    finally:
        stop.set()
        thread.join(15)
    code = ack.split(b"MSA|", 1)[1][:2].decode() if b"MSA|" in ack else "?"
    click.echo(f"  sent {V2_REFERRAL.name} to the MLLP listener: ACK {code} (stored before "
               "the ACK)")
    handlers = {k: v for k, v in all_handlers(services).items() if k.startswith("hl7.")}
    Worker(services.work, handlers).drain()
    referral = services.store.try_get_by_source("hl7|DEMOEHR^NORTHCLINIC|DEMO-V2-0001^DEMOEHR")
    if referral is None:
        raise click.ClickException("the HL7 v2 referral was not mapped; see "
                                   "'refloop quarantine list'")
    if referral.stage == Stage.DETECTED:
        referral = services.referrals.act(referral.id, Command(
            "accept", actor=COORDINATOR, source="demo"))
    click.echo(f"  referral {short_id(referral.id)} ({referral.priority}, {referral.stage.value}), "
               f"payer from IN1: {referral.payer or 'none'}")
    return referral


def show_worklist(services: Any, limit: int = 15) -> None:
    open_ones = [r for r in services.store.list(limit=1000) if not r.terminal]
    open_ones.sort(key=lambda r: (PRIORITY_RANK.get(r.priority, 9),
                                  r.deadline or datetime.max.replace(tzinfo=UTC)))
    now = datetime.now(UTC)
    click.echo(f"\nWorklist: {len(open_ones)} open referrals (most urgent first)")
    print_table(["referral", "priority", "stage", "specialty", "age", "due"],
                [[short_id(r.id), r.priority, r.stage.value, r.specialty,
                  f"{(now - r.created_at).days}d", _due(r, now)] for r in open_ones[:limit]])


def show_funnel(services: Any) -> None:
    steps = funnel(services.db)
    top = steps[0].count if steps else 0
    click.echo("\nFunnel (referrals that reached each step)")
    for step in steps:
        click.echo(f"  {step.name:<16} {step.count:>5}  {bar(step.count, top)}")
    lost = fall_out(services.db)
    click.echo("Fell out: " + (", ".join(f"{k} {v}" for k, v in sorted(lost.items())) or "none"))


def _due(referral: Referral, now: datetime) -> str:
    return describe_due(referral.deadline, now)[0]
