"""The peers `refloop demo` runs on 127.0.0.1: the sandbox EHR the new referrals arrive from
(sekmet-fhir, or HAPI FHIR with `--ehr hapi`), the demo EHR that launches the SMART app, and
Refloop's own HTTP edge while the report runs (the notifications' endpoint)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from referrals.ids import short_id
from refloop.demo_data import demo_resources
from refloop.output import print_table


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
    ehr = DemoEhr(stable_port(key_file.parent / "launch-port"),
                  app_launch_url=f"{base}/smart/launch",
                  demo_user="Practitioner/coordinator-1")
    ehr.add({"resourceType": "Practitioner", "id": "coordinator-1",
             "name": [{"given": ["Casey"], "family": "Coordinator"}]})
    ehr.register(DEMO_CLIENT_ID, f"{base}/smart/callback", DEFAULT_SCOPES,
                 jwks={"keys": [key.as_dict(private=False) | {"kid": DEMO_KID}]})
    os.environ["REFLOOP_SMART__DEMO_EHR"] = ehr.fhir
    return ehr.start()


class SandboxEhr:
    """sekmet-fhir as a subprocess on 127.0.0.1, data under var/demo-ehr, simulator off."""

    def __init__(self, var_dir: Path) -> None:
        executable = Path(sys.executable).parent / "sekmet"
        if not executable.exists():
            raise click.ClickException("sekmet-fhir is not installed in this environment; run "
                                       "'make setup', or 'refloop demo --ehr none'")
        data = (var_dir / "demo-ehr").resolve()
        data.mkdir(parents=True, exist_ok=True)
        port = stable_port(data / "port")
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
        port = stable_port(data / "port")
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
        listener = EdgeListener(services)
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
                     short_id(found[0].id) if found else "MISSING", found[0].stage.value if found
                     else "-", found[0].priority if found else "-",
                     f"{found[1]:.1f}s" if found and new else "-"])
    print_table(["demo key", "in the EHR", "this run", "referral", "stage", "priority",
                 "arrived after"], rows)
    if len(arrived) < len(items):
        raise click.ClickException("some referrals did not arrive within 30 s; see "
                                   "'refloop subscriptions list' and var/demo-ehr/sekmet.log")


class EdgeListener:
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


def stable_port(remembered: Path) -> int:
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
