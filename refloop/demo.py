"""`refloop demo`: load the demo referrals, drive them through the lifecycle, show the worklist
and the funnel, then leave the server running with the Task facade on 127.0.0.1.

With `--ehr sekmet` (the default) the just-detected referrals of the fixture do not start in
Refloop: a sandbox EHR (sekmet-fhir, the venv's `sekmet serve`, a subprocess on 127.0.0.1 with its
data under var/demo-ehr and its simulator disabled) receives their patients, coverage and
ServiceRequests, Refloop registers a Subscription on it, and the referrals arrive through the real
notification path (hook endpoint, inbox, work queue, re-read from the EHR)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from referrals.analytics import fall_out, funnel
from referrals.errors import IllegalTransition
from referrals.model import (
    LINK_CONSULT_NOTE,
    Actor,
    Command,
    Link,
    Reason,
    Referral,
    Stage,
    new_referral_id,
)
from referrals.sla import describe_due
from refloop.context import Context, pass_context
from refloop.output import bar, print_table
from refloop.schema import ensure_schema

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "demo" / "referrals.json"
#: one referral a legacy EHR sends as HL7 v2 (REF^I12 with its insurance in IN1)
V2_REFERRAL = FIXTURES.parent / "v2_referral.hl7"
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
            listener: _Listener | None = _Listener(services)
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


def start_demo_ehr(settings: Any) -> Any:
    """The demo EHR (refloop/demo_ehr.py) on a stable 127.0.0.1 port, with Refloop's SMART app
    registered (private_key_jwt, a key under var/demo-ehr), and the server's `[smart] demo_ehr`
    tenant pointed at it (REFLOOP_SMART__DEMO_EHR, inherited by the roles the demo starts)."""
    from joserfc.jwk import RSAKey

    from refloop.demo_ehr import DemoEhr
    from refloop.files import write_private
    from smart_app.config import DEFAULT_SCOPES, DEMO_CLIENT_ID, DEMO_KID, demo_key_file

    key_file = demo_key_file(settings.var_dir)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    if key_file.exists():
        key = RSAKey.import_key(key_file.read_bytes())
    else:
        key = RSAKey.generate_key(2048, parameters={"kid": DEMO_KID})
        write_private(key_file, key.as_pem(private=True))
    base = settings.base_url
    ehr = DemoEhr(_stable_port(key_file.parent / "launch-port"),
                  app_launch_url=f"{base}/smart/launch",
                  demo_user="Practitioner/coordinator-1")
    ehr.add({"resourceType": "Practitioner", "id": "coordinator-1",
             "name": [{"given": ["Casey"], "family": "Coordinator"}]})
    ehr.register(DEMO_CLIENT_ID, f"{base}/smart/callback", DEFAULT_SCOPES,
                 jwks={"keys": [key.as_dict(private=False) | {"kid": DEMO_KID}]})
    os.environ["REFLOOP_SMART__DEMO_EHR"] = ehr.fhir
    return ehr.start()


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
    click.echo(f"  referral {referral.id[:8]} ({referral.priority}, {referral.stage.value}), "
               f"payer from IN1: {referral.payer or 'none'}")
    return referral


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
            changes["add_outputs"] = [_link(LINK_CONSULT_NOTE, f"DocumentReference/{item['key']}")]
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
    print_table(["referral", "priority", "stage", "specialty", "age", "due"],
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


class SandboxEhr:
    """sekmet-fhir as a subprocess on 127.0.0.1, data under var/demo-ehr, simulator off."""

    def __init__(self, var_dir: Path) -> None:
        executable = Path(sys.executable).parent / "sekmet"
        if not executable.exists():
            raise click.ClickException("sekmet-fhir is not installed in this environment; run "
                                       "'make setup', or 'refloop demo --ehr none'")
        data = (var_dir / "demo-ehr").resolve()
        data.mkdir(parents=True, exist_ok=True)
        port = _stable_port(data / "port")
        self.root = f"http://127.0.0.1:{port}"
        self.base = f"{self.root}/fhir"
        config = data / "settings.yaml"
        config.write_text(f"base_url: {self.base}\nhost: 127.0.0.1\nport: {port}\n"
                          f"data_dir: {data}\nown_private_key_path: {data / 'sekmet_key.pem'}\n"
                          "simulator:\n  enabled: false\nlog_inbound: false\n",
                          encoding="utf-8")
        self.log = data / "sekmet.log"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([str(executable), "serve", "--config", str(config)],
                                            stdout=out, stderr=subprocess.STDOUT, cwd=data)

    def wait_ready(self, client: Any, timeout: float = 60.0) -> None:
        port = int(self.root.rsplit(":", 1)[1])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise click.ClickException(f"the sandbox EHR stopped at start-up; see {self.log}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                client.get("metadata")
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise click.ClickException(f"the sandbox EHR did not start within {timeout:.0f} s; "
                                   f"see {self.log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


class HapiSandbox:
    """The HAPI FHIR JPA server of interop/hapi (Java 17 and Maven; built on first use) on
    127.0.0.1, through its run script; its H2 database, pid file and log under var/demo-hapi, so
    reruns find their data, Subscription and port again."""

    SCRIPT = Path(__file__).resolve().parent.parent / "interop" / "hapi" / "run"

    def __init__(self, var_dir: Path) -> None:
        missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
        if missing or not self.SCRIPT.exists():
            raise click.ClickException(
                f"--ehr hapi needs Java 17, Maven and interop/hapi ("
                f"{', '.join(missing) or 'interop/hapi'} not found); install them "
                "(apt-get install openjdk-17-jdk-headless maven) or use --ehr sekmet")
        data = (var_dir / "demo-hapi").resolve()
        data.mkdir(parents=True, exist_ok=True)
        port = _stable_port(data / "port")
        self.root = f"http://127.0.0.1:{port}"
        self.base = f"{self.root}/fhir"
        self.log = data / "hapi.log"
        jdbc = f"jdbc:h2:file:{data / 'h2' / 'hapi'};DB_CLOSE_DELAY=-1"
        # No 60 s search cache: a rerun's identifier searches must see the last run's data.
        self.env = {**os.environ, "HAPI_PEER_DATA_DIR": str(data), "HAPI_PEER_JAVA_OPTS":
                    f"-Xms256m -Xmx1g -XX:+UseSerialGC -Drefloop.hapi.jdbc-url={jdbc} "
                    "-Drefloop.hapi.reuse-cached-search-results-millis=0"}
        click.echo("Starting HAPI FHIR (the first run builds interop/hapi with Maven; start-up "
                   "takes 30-60 s) ...", err=True)
        started = subprocess.run(["bash", str(self.SCRIPT), "start", str(port)], env=self.env,
                                 stdout=subprocess.DEVNULL, check=False)
        if started.returncode != 0:
            raise click.ClickException(f"HAPI FHIR did not start; see {self.log} and "
                                       f"{data / 'build.log'}")

    def wait_ready(self, client: Any) -> None:
        client.get("metadata")  # `run start` returned once /metadata answered

    def stop(self) -> None:
        subprocess.run(["bash", str(self.SCRIPT), "stop"], env=self.env, check=False,
                       capture_output=True)


def run_sandbox_ehr(services: Any, items: list[dict[str, Any]],
                    ehr: str = "sekmet") -> SandboxEhr | HapiSandbox:
    """Start the sandbox EHR, register Refloop on it, create the referrals there and wait until
    they arrive here through the notification path."""
    from referrals.worker import Worker
    from refloop.wiring import all_handlers
    from subscriptions.client import FhirClient
    from subscriptions.mapping import source_key

    sandbox = HapiSandbox(services.settings.var_dir) if ehr == "hapi" \
        else SandboxEhr(services.settings.var_dir)
    try:
        client = FhirClient(sandbox.base, timeout=10, retries=1)
        sandbox.wait_ready(client)
        listener = _Listener(services)
        try:
            subs = services.adapters["subscriptions"]
            click.echo(f"\nSandbox EHR ({'HAPI FHIR' if ehr == 'hapi' else 'sekmet-fhir'}) "
                       f"at {sandbox.base}")
            outcome = subs.register(sandbox.base)
            click.echo(f"Registered: {outcome.flavour}, Subscription/{outcome.subscription_id} "
                       f"{outcome.status}{' (reused)' if outcome.reused else ''}: {outcome.why}")
            subs.reconcile(sandbox.base)  # start-up catch-up before trusting pushes
            client = FhirClient(sandbox.base, timeout=10, retries=2)
            started = time.monotonic()
            created = {item["key"]: put_demo_referral(client, item) for item in items}
            keys = {k: source_key(sandbox.base, sr_id) for k, (sr_id, _) in created.items()}
            arrived: dict[str, tuple[Any, float]] = {}
            worker = Worker(services.work, all_handlers(services))
            with click.progressbar(length=len(keys), label="Waiting for the EHR's referrals "
                                   "to arrive", file=sys.stderr) as progress:
                while len(arrived) < len(keys) and time.monotonic() - started < 30:
                    worker.drain()
                    for key, source in keys.items():
                        found = services.store.try_get_by_source(source)
                        if key not in arrived and found is not None:
                            arrived[key] = (found, time.monotonic() - started)
                            progress.update(1)
                    time.sleep(0.1)
        finally:
            listener.stop()
        _show_arrivals(items, created, arrived)
    except BaseException:
        sandbox.stop()
        raise
    return sandbox


def put_demo_referral(client: Any, item: dict[str, Any]) -> tuple[str, bool]:
    """Patient, Practitioner, Coverage and ServiceRequest of one fixture item in the EHR, each
    created once (found by identifier on reruns). Returns (ServiceRequest id, new)."""
    person, payer = item["patient"], item["payer"]
    patient, _ = _ensure(client, {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:refloop:demo:mrn", "value": person["mrn"]}],
        "name": [{"family": person["family"], "given": [person["given"]]}],
        "gender": person["gender"], "birthDate": person["birthDate"]})
    doctor, _ = _ensure(client, {
        "resourceType": "Practitioner",
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi",
                        "value": item["requester"]["npi"]}],
        "name": [{"text": item["requester"]["name"]}]})
    coverage, _ = _ensure(client, {
        "resourceType": "Coverage", "status": "active",
        "identifier": [{"system": "urn:refloop:demo:member", "value": payer["member"]}],
        "subscriberId": payer["member"], "beneficiary": {"reference": f"Patient/{patient}"},
        "payor": [{"display": payer["name"], "identifier": {"value": payer["id"]}}]})
    service_request = demo_resources(item)["ServiceRequest"]
    service_request.pop("id")
    service_request.update({
        "identifier": [{"system": "urn:refloop:demo", "value": item["key"]}],
        "performerType": {"text": item["specialty"]},
        "subject": {"reference": f"Patient/{patient}"},
        "requester": {"reference": f"Practitioner/{doctor}",
                      "display": item["requester"]["name"]},
        "insurance": [{"reference": f"Coverage/{coverage}"}]})
    return _ensure(client, service_request)


def _ensure(client: Any, resource: dict[str, Any]) -> tuple[str, bool]:
    ident = resource["identifier"][0]
    found = client.get(resource["resourceType"],
                       [("identifier", f"{ident['system']}|{ident['value']}")]).body
    for entry in (found or {}).get("entry") or []:
        return str(entry["resource"]["id"]), False
    created = client.send("POST", resource["resourceType"], body=resource, ok=(201,)).body
    return str(created["id"]), True


def _show_arrivals(items: list[dict[str, Any]], created: dict[str, tuple[str, bool]],
                   arrived: dict[str, tuple[Any, float]]) -> None:
    click.echo(f"\nReferrals created in the EHR and detected by Refloop: {len(arrived)} of "
               f"{len(items)}")
    rows = []
    for item in items:
        sr_id, new = created[item["key"]]
        found = arrived.get(item["key"])
        rows.append([item["key"], f"ServiceRequest/{sr_id[:8]}", "new" if new else "existing",
                     found[0].id[:8] if found else "MISSING", found[0].stage.value if found
                     else "-", found[0].priority if found else "-",
                     f"{found[1]:.1f}s" if found and new else "-"])
    print_table(["demo key", "in the EHR", "this run", "referral", "stage", "priority",
                 "arrived after"], rows)
    if len(arrived) < len(items):
        raise click.ClickException("some referrals did not arrive within 30 s; see "
                                   "'refloop subscriptions list' and var/demo-ehr/sekmet.log")


class _Listener:
    """Refloop's web server (the HTTP edge) on its configured port while the demo drives the
    EHR (the notification target); stopped before `--serve` starts the real web role on the
    same port."""

    def __init__(self, services: Any) -> None:
        from refloop.app import create_edge_app
        from refloop.edge.server import serve_in_thread

        settings = services.settings
        try:
            self.server = serve_in_thread(create_edge_app(services), settings.http_host,
                                          settings.http_port)
        except OSError as exc:
            raise click.ClickException(f"port {settings.http_port} is busy ({exc}); set "
                                       "REFLOOP_HTTP_PORT to a free port") from exc

    def stop(self) -> None:
        self.server.stop()


def _stable_port(remembered: Path) -> int:
    """The sandbox's port of the last run when it is free (its Subscriptions and our
    registration name it), else a new free one."""
    if remembered.exists():
        port = int(remembered.read_text() or 0)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    remembered.write_text(str(port))
    return port


def _link(kind: str, reference: str) -> Link:
    return Link(kind, reference)


def _due(referral: Referral, now: datetime) -> str:
    return describe_due(referral.deadline, now)[0]
