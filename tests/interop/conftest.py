"""Fixtures for the interop tests: a real HAPI FHIR JPA server (interop/hapi) as the peer.

``hapi_base_url`` (session scope) builds the peer if needed and starts it on a free loopback port
with ``interop/hapi/run start PORT``; it stops it when the session ends. The first build downloads
about 300 MB of Maven artifacts; start-up takes about 20-30 s on two cores.

Without Java 17+ or Maven the interop tests are left out (deselected) with one summary line
saying so, unless ``REFLOOP_REQUIRE_INTEROP=1``, in which case they fail.
``REFLOOP_INTEROP_HAPI_URL`` points the suite at a peer that already runs
(``interop/hapi/run start``) instead of starting one.

Refloop's side (``refloop_peer``): real services on both databases (the ``database_url`` fixture
of tests/conftest.py) and Refloop's Flask app served on a free loopback port, so HAPI delivers to
Refloop's real ``/hooks/<id>`` endpoint. Every Subscription a test leaves on HAPI is deleted at
teardown (HAPI would keep delivering to the closed port).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import BaseWSGIServer, make_server

from referrals.model import Referral
from referrals.worker import Worker
from refloop.app import create_app
from refloop.services import Services, build_services
from refloop.settings import Settings
from refloop.wiring import all_handlers
from subscriptions.adapter import SubscriptionsAdapter
from subscriptions.mapping import source_key

REPO_ROOT = Path(__file__).resolve().parents[2]
HAPI_DIR = REPO_ROOT / "interop" / "hapi"
RUN_SCRIPT = HAPI_DIR / "run"
INTEROP_DIR = Path(__file__).resolve().parent

REUSE_URL_ENV = "REFLOOP_INTEROP_HAPI_URL"
REUSE_R5_URL_ENV = "REFLOOP_INTEROP_HAPI_R5_URL"
JAVA_MAJOR = 17

# A cold first build (Maven downloads) plus the JVM start-up can take several minutes; the
# session fixture's set-up is counted against the first interop test's timeout.
INTEROP_TEST_TIMEOUT_S = 900
BUILD_TIMEOUT_S = 1200
START_TIMEOUT_S = 240


SKIP_LINE = pytest.StashKey[str]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_timeout_plugin = config.pluginmanager.hasplugin("timeout")
    interop: list[pytest.Item] = []
    for item in items:
        try:
            Path(str(item.path)).resolve().relative_to(INTEROP_DIR)
        except ValueError:
            continue
        interop.append(item)
        item.add_marker(pytest.mark.interop)
        if has_timeout_plugin and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(INTEROP_TEST_TIMEOUT_S))
    if not interop or (os.environ.get(REUSE_URL_ENV) and os.environ.get(REUSE_R5_URL_ENV)) or \
            os.environ.get("REFLOOP_REQUIRE_INTEROP") == "1":
        return  # with REFLOOP_REQUIRE_INTEROP=1 the hapi_base_url fixture fails instead
    missing = missing_tools()
    if missing:
        # One line for the whole suite (pytest would print a skip line per test file).
        config.stash[SKIP_LINE] = f"{len(interop)} {skip_reason(missing)}"
        config.hook.pytest_deselected(items=interop)
        items[:] = [item for item in items if item not in interop]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int,
                            config: pytest.Config) -> None:
    line = config.stash.get(SKIP_LINE, "")
    if line:
        terminalreporter.write_line(line, yellow=True, bold=True)


def skip_reason(missing: str) -> str:
    return (f"interop tests (HAPI FHIR peer) skipped: {missing}; install Java 17 and Maven "
            "(apt-get install openjdk-17-jdk-headless maven); REFLOOP_REQUIRE_INTEROP=1 fails "
            "instead")


def java_major(version_output: str) -> int | None:
    """The major version in `java -version` output ('openjdk version "17.0.15"', '"1.8.0_402"')."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def missing_tools() -> str:
    """What is missing to build and run the HAPI peer ("" when nothing is)."""
    missing = []
    if shutil.which("java") is None:
        missing.append("java not found")
    else:
        probe = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=60,
                               check=False)
        major = java_major(probe.stderr + probe.stdout)
        if major is None or major < JAVA_MAJOR:
            missing.append(f"java {major or '?'} found, {JAVA_MAJOR}+ needed")
    if shutil.which(os.environ.get("MVN", "mvn")) is None:
        missing.append("mvn not found")
    return ", ".join(missing)


def _missing_tools_outcome(missing: str) -> None:
    reason = skip_reason(missing)
    if os.environ.get("REFLOOP_REQUIRE_INTEROP") == "1":
        pytest.fail(reason.replace("skipped", "cannot run"), pytrace=False)
    pytest.skip(reason)


def _check_running(base_url: str) -> None:
    status: int | str
    try:
        status = requests.get(f"{base_url}/metadata", timeout=30).status_code
    except requests.RequestException as exc:
        status = type(exc).__name__
    if status != 200:
        pytest.fail(f"interop: {REUSE_URL_ENV}={base_url} does not answer /metadata ({status}); "
                    "start the peer with interop/hapi/run start, or unset the variable",
                    pytrace=False)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"


@pytest.fixture(scope="session")
def hapi_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """FHIR base URL (``http://127.0.0.1:PORT/fhir``) of a running HAPI FHIR JPA server (R4)."""
    yield from _peer(tmp_path_factory, "R4", REUSE_URL_ENV)


@pytest.fixture(scope="session")
def hapi_r5_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same HAPI FHIR JPA server in FHIR R5 mode (Spring profile r5: topic-based
    Subscriptions), started only by the sessions that use it. ``REFLOOP_INTEROP_HAPI_R5_URL``
    reuses one started with ``HAPI_PEER_FHIR_VERSION=R5 interop/hapi/run start``."""
    yield from _peer(tmp_path_factory, "R5", REUSE_R5_URL_ENV)


def _peer(tmp_path_factory: pytest.TempPathFactory, version: str, reuse_env: str
          ) -> Iterator[str]:
    reuse = os.environ.get(reuse_env, "").rstrip("/")
    if reuse:
        _check_running(reuse)
        yield reuse
        return
    missing = missing_tools()
    if missing:
        _missing_tools_outcome(missing)

    data_dir = tmp_path_factory.mktemp(f"hapi-peer-{version.lower()}")
    env = dict(os.environ)
    # Own pid file and log per session, so a peer started by hand (run start) is left alone.
    env["HAPI_PEER_DATA_DIR"] = str(data_dir)
    env["HAPI_PEER_START_TIMEOUT"] = str(START_TIMEOUT_S)
    env["HAPI_PEER_FHIR_VERSION"] = version

    build = subprocess.run(
        ["bash", str(RUN_SCRIPT), "build"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if build.returncode != 0:
        pytest.fail(
            "interop: building the HAPI FHIR peer failed:\n"
            f"{build.stdout}\n{_tail(data_dir / 'build.log')}",
            pytrace=False,
        )

    port = _free_port()
    start = subprocess.run(
        ["bash", str(RUN_SCRIPT), "start", str(port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S + 60,
        check=False,
    )
    if start.returncode != 0:
        subprocess.run(["bash", str(RUN_SCRIPT), "stop"], env=env, check=False, capture_output=True)
        pytest.fail(
            f"interop: starting the HAPI FHIR peer ({version}) failed:\n"
            f"{start.stderr}\n{_tail(data_dir / 'hapi.log')}",
            pytrace=False,
        )
    lines = start.stdout.strip().splitlines()
    base_url = lines[-1].strip() if lines else ""
    assert base_url == f"http://127.0.0.1:{port}/fhir", (
        f"unexpected output of run start: {start.stdout!r}"
    )

    try:
        yield base_url
    finally:
        subprocess.run(
            ["bash", str(RUN_SCRIPT), "stop"],
            env=env,
            check=False,
            capture_output=True,
            timeout=90,
        )


FHIR_JSON = "application/fhir+json"
SEND_DELETE_EXT = "http://hapifhir.io/fhir/StructureDefinition/subscription-send-delete-messages"
PEER_TIMEOUT_S = 30.0


def wait_for(check: Callable[[], Any], seconds: float, message: str,
             every: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy; fail with `message` after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} (waited {seconds:.0f} s)")
        time.sleep(every)


class HapiPeer:
    """A small FHIR client for the HAPI peer, for setting up data the way an EHR would."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()
        self.http.headers.update({"Accept": FHIR_JSON})
        self.subscriptions: list[str] = []  # created by the test itself; deleted at teardown

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        r = self.http.post(f"{self.base}/{resource['resourceType']}", json=resource,
                           headers={"Content-Type": FHIR_JSON}, timeout=PEER_TIMEOUT_S)
        assert r.status_code == 201, r.text
        created: dict[str, Any] = r.json()
        if created["resourceType"] == "Subscription":
            self.subscriptions.append(str(created["id"]))
        return created

    def update(self, resource: dict[str, Any]) -> dict[str, Any]:
        r = self.http.put(f"{self.base}/{resource['resourceType']}/{resource['id']}",
                          json=resource, headers={"Content-Type": FHIR_JSON},
                          timeout=PEER_TIMEOUT_S)
        assert r.status_code in (200, 201), r.text
        updated: dict[str, Any] = r.json()
        return updated

    def read(self, path: str) -> dict[str, Any]:
        r = self.http.get(f"{self.base}/{path}", timeout=PEER_TIMEOUT_S,
                          headers={"Cache-Control": "no-cache"})
        assert r.status_code == 200, r.text
        found: dict[str, Any] = r.json()
        return found

    def delete(self, path: str, ok: tuple[int, ...] = (200, 204)) -> None:
        r = self.http.delete(f"{self.base}/{path}", timeout=PEER_TIMEOUT_S)
        assert r.status_code in ok, r.text

    def trigger(self, subscription_id: str, *, resource_ids: tuple[str, ...] = (),
                search_url: str = "") -> dict[str, Any]:
        """`$trigger-subscription`: HAPI delivers the given resources (or a search) again."""
        parameters: list[dict[str, str]] = [{"name": "resourceId", "valueUri": r}
                                            for r in resource_ids]
        if search_url:
            parameters.append({"name": "searchUrl", "valueString": search_url})
        r = self.http.post(f"{self.base}/Subscription/{subscription_id}/$trigger-subscription",
                           json={"resourceType": "Parameters", "parameter": parameters},
                           headers={"Content-Type": FHIR_JSON}, timeout=PEER_TIMEOUT_S)
        assert r.status_code == 200, r.text
        outcome: dict[str, Any] = r.json()
        return outcome

    def wait_active(self, subscription_id: str) -> dict[str, Any]:
        return dict(wait_for(lambda: (lambda s: s if s["status"] == "active" else None)(
            self.read(f"Subscription/{subscription_id}")), PEER_TIMEOUT_S,
            f"Subscription/{subscription_id} not active"))

    def set_send_delete(self, subscription_id: str) -> dict[str, Any]:
        """Switch on HAPI's per-Subscription extension that forwards deletes."""
        current = self.read(f"Subscription/{subscription_id}")
        channel = current["channel"]
        channel["extension"] = [e for e in channel.get("extension") or []
                                if e.get("url") != SEND_DELETE_EXT]
        channel["extension"].append({"url": SEND_DELETE_EXT, "valueBoolean": True})
        self.update(current)
        return self.wait_active(subscription_id)

    def delete_subscription(self, subscription_id: str) -> None:
        self.http.delete(f"{self.base}/Subscription/{subscription_id}", timeout=PEER_TIMEOUT_S)


class RefloopPeer:
    """Refloop with its real app on a fixed loopback port, over one database.

    `stop()`/`start()` take the web server down and up on the same port (the hook URLs HAPI
    holds stay valid); `restart()` also builds fresh services on the same database, like a new
    process. `requests` records what reached the web server (method, path, status) so tests can
    see that a replay arrived even when it stored nothing.
    """

    def __init__(self, database_url: str, var_dir: Path, sections: dict[str, Any]) -> None:
        self.database_url = database_url
        self.var_dir = var_dir
        self.sections = sections
        self.port = _free_port()
        self.services = self._build()
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def _build(self) -> Services:
        return build_services(Settings(var_dir=self.var_dir, database_url=self.database_url,
                                       http_port=self.port, sections=self.sections,
                                       log_level="WARNING"))

    @property
    def base_url(self) -> str:
        return self.services.settings.base_url

    @property
    def adapter(self) -> SubscriptionsAdapter:
        found: SubscriptionsAdapter = self.services.adapters["subscriptions"]
        return found

    def start(self) -> None:
        app = create_app(self.services)
        inner = app.wsgi_app

        def recording(environ: dict[str, Any], start_response: Any) -> Any:
            def start(status: str, headers: Any, exc_info: Any = None) -> Any:
                with self._lock:
                    self.requests.append((environ["REQUEST_METHOD"], environ["PATH_INFO"],
                                          int(status.split()[0])))
                return start_response(status, headers, exc_info)
            return inner(environ, start)

        app.wsgi_app = recording  # type: ignore[method-assign]
        self._server = make_server("127.0.0.1", self.port, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=f"refloop-{self.port}")
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def restart(self, *, serve: bool = True) -> None:
        """A new Refloop process on the same database and port; with `serve=False` its web
        server stays down (only work and reconciliation run)."""
        self.stop()
        self.services.close()
        self.services = self._build()
        if serve:
            self.start()

    def close(self) -> None:
        self.stop()
        self.services.close()

    def seen(self, method: str, path_part: str, status: int = 200) -> int:
        with self._lock:
            return sum(1 for m, p, s in self.requests
                       if m == method and path_part in p and s == status)

    def drain(self) -> int:
        return Worker(self.services.work, all_handlers(self.services)).drain()

    def wait_for(self, check: Callable[[], Any], seconds: float, message: str) -> Any:
        """Run due work, then check; until `check` is truthy."""
        return wait_for(lambda: self.drain() * 0 or check(), seconds, message)

    def referral(self, server: str, sr_id: str) -> Referral | None:
        return self.services.store.try_get_by_source(source_key(server, sr_id))

    def referrals_of(self, server: str) -> list[Referral]:
        prefix = f"fhir|{server}|"
        return [r for r in self.services.store.list(limit=10_000)
                if r.source_key.startswith(prefix)]

    def actions(self, referral_id: str) -> list[str]:
        return [e.action for e in self.services.store.events(referral_id)]

    def write_config(self, path: Path) -> Path:
        """A refloop.toml for the CLI: same database, port and [[fhir_servers]] entries."""
        lines = [f'database_url = "{self.database_url}"', f'var_dir = "{self.var_dir}"',
                 f"http_port = {self.port}", 'log_level = "WARNING"', ""]
        for server in self.sections.get("fhir_servers", []):
            lines.append("[[fhir_servers]]")
            lines += [f"{k} = {v!r}" if isinstance(v, int | float) else f'{k} = "{v}"'
                      for k, v in server.items()]
        path.write_text("\n".join(lines) + "\n")
        return path


@pytest.fixture
def hapi(hapi_base_url: str) -> Iterator[HapiPeer]:
    peer = HapiPeer(hapi_base_url)
    yield peer
    for subscription_id in peer.subscriptions:
        peer.delete_subscription(subscription_id)


@pytest.fixture
def patient_id(hapi: HapiPeer) -> str:
    """A Patient of this test only: the Subscription criteria are scoped to it, so the tests
    sharing the HAPI peer never see each other's ServiceRequests."""
    tag = uuid.uuid4().hex[:10]
    return str(hapi.create({"resourceType": "Patient", "identifier": [
        {"system": "urn:refloop:interop", "value": tag}],
        "name": [{"family": f"Interop-{tag}", "given": ["Ada"]}]})["id"])


@pytest.fixture
def refloop_peer(database_url: str, tmp_path: Path, hapi: HapiPeer,
                 patient_id: str) -> Iterator[RefloopPeer]:
    """Refloop configured for the HAPI peer with criteria scoped to this test's Patient."""
    criteria = f"ServiceRequest?intent=order&subject=Patient/{patient_id}"
    sections = {"fhir_servers": [{"base_url": hapi.base, "criteria": criteria,
                                  "poll_interval": 60}]}
    peer = RefloopPeer(database_url, tmp_path / "var", sections)
    peer.start()
    try:
        yield peer
    finally:
        for row in peer.adapter.registrations():
            if row.subscription_id:
                hapi.delete_subscription(row.subscription_id)
        peer.close()


class Orders:
    """Referral orders for this test's Patient, as an EHR writes them (built here, not official
    examples): a requester Practitioner and a Coverage are created on HAPI first."""

    def __init__(self, hapi: HapiPeer, patient_id: str) -> None:
        self.hapi = hapi
        self.patient_id = patient_id
        self.practitioner_id = str(hapi.create({
            "resourceType": "Practitioner",
            "name": [{"family": "Lindqvist", "given": ["Eva"]}]})["id"])
        self.coverage_id = str(hapi.create({
            "resourceType": "Coverage", "status": "active",
            "beneficiary": {"reference": f"Patient/{patient_id}"},
            "payor": [{"display": "Acme Health Plan"}]})["id"])

    def body(self, *, priority: str = "routine", reason: str = "Chest pain on exertion",
             status: str = "active") -> dict[str, Any]:
        return {
            "resourceType": "ServiceRequest", "status": status, "intent": "order",
            "priority": priority,
            "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "3457005",
                                      "display": "Patient referral"}]}],
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "183519002",
                                 "display": "Referral to cardiology service"}]},
            "reasonCode": [{"text": reason}],
            "performerType": {"text": "Cardiology"},
            "subject": {"reference": f"Patient/{self.patient_id}"},
            "requester": {"reference": f"Practitioner/{self.practitioner_id}"},
            "insurance": [{"reference": f"Coverage/{self.coverage_id}"}],
        }

    def create(self, **fields: Any) -> dict[str, Any]:
        return self.hapi.create(self.body(**fields))


@pytest.fixture
def orders(hapi: HapiPeer, patient_id: str) -> Orders:
    return Orders(hapi, patient_id)


R5_TOPIC = "http://refloop.example/interop/SubscriptionTopic/servicerequest-changed"


@pytest.fixture
def hapi_r5(hapi_r5_base_url: str) -> Iterator[HapiPeer]:
    """The HAPI peer in R5 mode, with the SubscriptionTopic an EHR's administrators would define
    (ServiceRequest create and update, filterable by subject, category and intent)."""
    peer = HapiPeer(hapi_r5_base_url)
    if not peer.read(f"SubscriptionTopic?url={R5_TOPIC}").get("entry"):
        peer.create({
            "resourceType": "SubscriptionTopic", "url": R5_TOPIC, "status": "active",
            "title": "ServiceRequest created or changed",
            "resourceTrigger": [{"resource": "ServiceRequest",
                                 "supportedInteraction": ["create", "update"]}],
            "canFilterBy": [{"resource": "ServiceRequest", "filterParameter": p}
                            for p in ("subject", "category", "intent")]})
    yield peer
    for subscription_id in peer.subscriptions:
        peer.delete_subscription(subscription_id)


@pytest.fixture
def r5_patient_id(hapi_r5: HapiPeer) -> str:
    return str(hapi_r5.create({"resourceType": "Patient", "name": [
        {"family": f"R5-{uuid.uuid4().hex[:8]}"}]})["id"])


@pytest.fixture
def r5_refloop_peer(database_url: str, tmp_path: Path, hapi_r5: HapiPeer,
                    r5_patient_id: str) -> Iterator[RefloopPeer]:
    """Refloop for the R5 peer, criteria scoped to this test's Patient; the hook is
    authenticated by its path (HAPI 8.8.0 sends no R5 `parameter` headers)."""
    criteria = f"ServiceRequest?intent=order&subject=Patient/{r5_patient_id}"
    peer = RefloopPeer(database_url, tmp_path / "var", {"fhir_servers": [
        {"base_url": hapi_r5.base, "criteria": criteria, "hook_auth": "path"}]})
    peer.start()
    try:
        yield peer
    finally:
        for row in peer.adapter.registrations():
            if row.subscription_id:
                hapi_r5.delete_subscription(row.subscription_id)
        peer.close()
