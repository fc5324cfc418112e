"""`refloop demo`: load the demo referrals, drive them through the lifecycle, show the worklist
and the funnel, then leave the server running with the Task facade on 127.0.0.1."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from referrals.analytics import fall_out, funnel
from referrals.errors import IllegalTransition
from referrals.model import Actor, Command, Link, Reason, Referral, new_referral_id
from refloop.context import Context, pass_context
from refloop.output import bar, print_table

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "demo" / "referrals.json"
DEMO_SERVER = "demo"
COORDINATOR = Actor("PractitionerRole/coordinator-1", "Casey Coordinator", "human")
REASONS = {"decline": Reason("not-appropriate", "Better served by primary care"),
           "hold": Reason("auth-denied", "Payer denied prior authorization; appeal pending"),
           "cancel": Reason("patient-request", "Patient cancelled the referral"),
           "fail": Reason("unreachable", "Patient unreachable after repeated outreach")}
PRIORITY_RANK = {"stat": 0, "asap": 1, "urgent": 2, "routine": 3}


@click.command()
@click.option("--serve/--no-serve", default=True, show_default=True,
              help="Leave the server running afterwards.")
@pass_context
def demo(obj: Context, serve: bool) -> None:
    """Run the demo on the embedded default (SQLite under var/)."""
    from refloop.cli import _ensure_schema

    _ensure_schema(obj.settings)
    services = obj.services
    items = json.loads(FIXTURES.read_text(encoding="utf-8"))
    created = 0
    with click.progressbar(items, label="Driving demo referrals through the lifecycle",
                           file=sys.stderr) as progress:
        for item in progress:
            created += load_referral(services, item)
    click.echo(f"\n{created} new referrals ({len(items) - created} already there).")
    show_worklist(services)
    show_funnel(services)
    if serve:
        from refloop import roles

        url = obj.settings.base_url
        click.echo(f"\nServer: {url}   Task facade: {url}/fhir/Task   "
                   f"CapabilityStatement: {url}/fhir/metadata\nPress Ctrl-C to stop.")
        base = ["--config", str(obj.config)] if obj.config else []
        sys.exit(roles.supervise(base, ["web", "worker", *roles.adapter_role_names(
            obj.settings)]))


def load_referral(services: Any, item: dict[str, Any]) -> int:
    """Store the item's FHIR resources, open its referral and apply its path. 1 if new."""
    resources = demo_resources(item)
    for resource in resources.values():
        services.resources.put(resource, server=DEMO_SERVER)
    started = datetime.now(UTC) - timedelta(days=item["age_days"], hours=3)
    draft = Referral(
        id=new_referral_id(), source_key=f"{DEMO_SERVER}|ServiceRequest/{item['key']}",
        service_request=f"ServiceRequest/{item['key']}", patient=f"Patient/{item['key']}",
        requester=f"Practitioner/{item['requester']['npi']}", priority=item["priority"],
        specialty=item["specialty"], reason_text=f"{item['display']}: {item['reason']['display']}",
        payer=item["payer"]["name"], identifiers=(("urn:refloop:demo", item["key"]),),
    )
    listener = Actor("Device/refloop-demo", "Demo loader")
    referral, new = services.referrals.open(draft, Command("detect", actor=listener, at=started,
                                                           source="demo"))
    if not new:
        return 0
    moment = started
    for action in item["path"]:
        moment += timedelta(hours=7)
        changes: dict[str, Any] = {}
        if action == "triage":
            changes["owner"] = COORDINATOR.reference
        if action == "schedule":
            changes["add_outputs"] = [_link("appointment", f"Appointment/{item['key']}")]
        if action == "close-loop":
            changes["add_outputs"] = [_link("consult-note", f"DocumentReference/{item['key']}")]
        try:
            referral = services.referrals.act(referral.id, Command(
                action, actor=COORDINATOR, at=min(moment, datetime.now(UTC)),
                reason=REASONS.get(action), source="demo", changes=changes))
        except IllegalTransition as exc:
            raise click.ClickException(f"demo fixture {item['key']}: {exc}") from exc
    return 1


def show_worklist(services: Any, limit: int = 15) -> None:
    open_ones = [r for r in services.store.list(limit=1000) if not r.terminal]
    open_ones.sort(key=lambda r: (PRIORITY_RANK.get(r.priority, 9),
                                  r.deadline or datetime.max.replace(tzinfo=UTC)))
    now = datetime.now(UTC)
    click.echo(f"\nWorklist: {len(open_ones)} open referrals (most urgent first)")
    print_table(["referral", "priority", "stage", "specialty", "age", "due in"],
                [[r.id[:8], r.priority, r.stage.value, r.specialty,
                  f"{(now - r.created_at).days}d", _due(r, now)] for r in open_ones[:limit]])


def show_funnel(services: Any) -> None:
    steps = funnel(services.db)
    top = steps[0].count if steps else 0
    click.echo("\nFunnel (referrals that reached each step)")
    for step in steps:
        click.echo(f"  {step.name:<16} {step.count:>5}  {bar(step.count, top)}")
    lost = fall_out(services.db)
    click.echo("Fell out: " + (", ".join(f"{k} {v}" for k, v in sorted(lost.items())) or "none"))


def demo_resources(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    key, patient, payer = item["key"], item["patient"], item["payer"]
    return {
        "Patient": {"resourceType": "Patient", "id": key,
                    "identifier": [{"system": "urn:refloop:demo:mrn", "value": patient["mrn"]}],
                    "name": [{"family": patient["family"], "given": [patient["given"]]}],
                    "gender": patient["gender"], "birthDate": patient["birthDate"]},
        "Coverage": {"resourceType": "Coverage", "id": key, "status": "active",
                     "subscriberId": payer["member"],
                     "beneficiary": {"reference": f"Patient/{key}"},
                     "payor": [{"display": payer["name"],
                                "identifier": {"value": payer["id"]}}]},
        "ServiceRequest": {
            "resourceType": "ServiceRequest", "id": key, "status": "active", "intent": "order",
            "priority": item["priority"],
            "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "3457005",
                                      "display": "Patient referral"}]}],
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": item["code"],
                                 "display": item["display"]}]},
            "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm",
                                        "code": item["reason"]["code"],
                                        "display": item["reason"]["display"]}]}],
            "subject": {"reference": f"Patient/{key}"},
            "requester": {"reference": f"Practitioner/{item['requester']['npi']}",
                          "display": item["requester"]["name"]},
            "insurance": [{"reference": f"Coverage/{key}"}]},
    }


def _link(kind: str, reference: str) -> Link:
    return Link(kind, reference)


def _due(referral: Referral, now: datetime) -> str:
    if referral.deadline is None:
        return "-"
    hours = (referral.deadline - now).total_seconds() / 3600
    return f"overdue {-hours:.0f}h" if hours < 0 else f"{hours:.0f}h"
