"""Two Refloop nodes (`refloop serve`, every role) on one PostgreSQL database, behind a load
generator that spreads FHIR notifications (rest-hook) and HL7 v2 referrals (MLLP) over both.
One node is killed with SIGKILL (its whole process group) mid-burst while its worker holds
leases: the other node takes the leased work over once the leases expire, every input either
node acknowledged becomes exactly one referral, and nothing is applied twice.

The load generator behaves as real senders do: an input the dead node did not acknowledge is
sent again to the other node (a FHIR server retries a failed notification, an MLLP sender
resends an unacknowledged message). The EHR peer is sekmet-fhir (re-reads of each
ServiceRequest)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from hl7_bridge.framing import FrameDecoder, build_frame
from referrals.store import connect
from referrals.store.schema import inbox, referral_events, referrals, work_items
from refloop.services import build_services
from refloop.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
NOTIFICATIONS = 240
MESSAGES = 120
LEASE_SECONDS = 3
SENDER = "GPSYS^GPCLINIC"


@dataclass
class Node:
    name: str
    http_port: int
    mllp_port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def pids(self) -> set[int]:
        """Every process of this node (its process group)."""
        found = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                fields = stat.rsplit(")", 1)[1].split()
                if int(fields[2]) == self.proc.pid:  # pgrp
                    found.add(int(entry.name))
        return found

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_node(name: str, database_url: str, tmp: Path) -> Node:
    http_port, mllp_port = free_port(), free_port()
    config = tmp / f"{name}.toml"
    config.write_text("\n".join([
        f'database_url = "{database_url}"', f'var_dir = "{tmp / name}"',
        f"http_port = {http_port}", "web_workers = 1", "web_threads = 4",
        f"lease_seconds = {LEASE_SECONDS}", "tick_seconds = 1", "worker_batch = 5",
        'log_level = "WARNING"', "[hl7]", f"port = {mllp_port}", "processes = 1", ""]))
    log = tmp / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "refloop", "--config", str(config), "serve"], cwd=tmp,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
        stderr=log.open("wb"), start_new_session=True)
    return Node(name, http_port, mllp_port, proc, log)


def wait_ready(node: Node, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and node.alive():
        try:
            if requests.get(f"{node.base}/readyz", timeout=2).status_code == 200:
                socket.create_connection(("127.0.0.1", node.mllp_port), timeout=2).close()
                return
        except (requests.RequestException, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"node {node.name} did not become ready: "
                         f"{node.log.read_text()[-2000:]}")


def v2_referral(n: int) -> bytes:
    return (f"MSH|^~\\&|GPSYS|GPCLINIC|REFHUB|CUH|20240514093512||REF^I12^REF_I12|TN{n:05d}|P|"
            f"2.5.1\r"
            f"RF1|P^Pending^HL70283|R^Routine^HL70280|Med^Medical^HL70281|"
            f"AM^Assume management^HL70282|O^Outpatient^HL70284|TWO-{n:05d}^GPCLINIC|20240514\r"
            f"PRD|RT^Referred to Provider^HL70286|Walsh^Conor|||||IMC67890^MC\r"
            f"PID|1||MRN{n:05d}^^^GPCLINIC^MR||Doe^Pat||19720314|F\r").encode()


@dataclass
class Load:
    """What each node acknowledged."""

    nodes: list[Node]
    hook_url_path: str
    secret: str
    service_requests: list[dict[str, Any]]
    acked_notifications: dict[int, str] = field(default_factory=dict)
    acked_messages: dict[int, str] = field(default_factory=dict)
    resent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def targets(self, n: int) -> list[Node]:
        first = self.nodes[n % 2]
        return [first, self.nodes[(n + 1) % 2]]

    def notify(self, n: int) -> None:
        sr = self.service_requests[n]
        for attempt, node in enumerate(self.targets(n) * 3):
            if not node.alive():
                continue
            try:
                r = requests.put(f"{node.base}{self.hook_url_path}/ServiceRequest/{sr['id']}",
                                 data=json.dumps(sr), timeout=10, headers={
                                     "Authorization": f"Bearer {self.secret}",
                                     "Content-Type": "application/fhir+json"})
            except requests.RequestException:
                r = None
            if r is not None and r.status_code == 200:
                with self.lock:
                    self.acked_notifications[n] = node.name
                    self.resent += attempt > 0
                return

    def send_v2(self, n: int) -> None:
        for attempt, node in enumerate(self.targets(n) * 3):
            if not node.alive():
                continue
            try:
                with socket.create_connection(("127.0.0.1", node.mllp_port), timeout=10) as s:
                    s.sendall(build_frame(v2_referral(n)))
                    decoder, frames = FrameDecoder(), []
                    while not frames:
                        data = s.recv(65536)
                        if not data:
                            break
                        frames = decoder.feed(data)
            except OSError:
                frames = []
            if frames and b"MSA|AA|" in frames[0]:
                with self.lock:
                    self.acked_messages[n] = node.name
                    self.resent += attempt > 0
                return

    def acked(self) -> int:
        with self.lock:
            return len(self.acked_notifications) + len(self.acked_messages)


#: the work the burst brings; a node also leases its own timers (start-up catch-up, rollups...),
#: which are due again later and so are not what "taken over and finished" is about
INPUT_KINDS = ("subscriptions.notification", "hl7.message")


def leases_held_by(db: Any, node: Node) -> list[int]:
    """The burst's work items leased by the node's processes now."""
    pids = node.pids()
    now = sa.func.now()
    with db.read() as c:
        rows = c.execute(sa.select(work_items.c.id, work_items.c.lease_owner).where(
            work_items.c.status == "pending", work_items.c.lease_owner.is_not(None),
            work_items.c.kind.in_(INPUT_KINDS), work_items.c.lease_expires > now)).all()
    return [r.id for r in rows if int(str(r.lease_owner).split(":")[1]) in pids]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # nodes share it
def test_a_node_killed_mid_burst_loses_nothing_and_applies_nothing_twice(
        database_url: str, tmp_path: Path, kit: SimpleNamespace) -> None:
    ehr = kit.start_sekmet(tmp_path / "ehr")
    try:
        run_two_nodes(database_url, tmp_path, ehr)
    finally:
        ehr.server.should_exit = True
        ehr.thread.join(timeout=10)


def run_two_nodes(database_url: str, tmp: Path, ehr: Any) -> None:
    patient = ehr.create({"resourceType": "Patient", "name": [{"family": "Okafor"}]})
    doctor = ehr.create({"resourceType": "Practitioner", "name": [{"family": "Lindqvist"}]})
    srs = [ehr.create({
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "priority": "routine", "category": [{"coding": [{"system": "http://snomed.info/sct",
                                                         "code": "3457005"}]}],
        "subject": {"reference": f"Patient/{patient['id']}"},
        "requester": {"reference": f"Practitioner/{doctor['id']}"},
        "performerType": {"text": f"Specialty {i % 7}"}}) for i in range(NOTIFICATIONS)]
    setup = build_services(Settings(var_dir=tmp / "setup", database_url=database_url))
    try:
        hook = setup.adapters["subscriptions"].registry.open_hook(
            server=ehr.base, purpose="referrals", deliver_kind="subscriptions.referral",
            status="active")
    finally:
        setup.close()
    nodes = [start_node("a", database_url, tmp), start_node("b", database_url, tmp)]
    db = connect(database_url)
    try:
        for node in nodes:
            wait_ready(node)
        load = Load(nodes, "/hooks/" + hook.id, hook.secret, srs)
        started = time.monotonic()
        senders = [threading.Thread(target=lambda: [load.notify(n) for n in range(NOTIFICATIONS)]),
                   threading.Thread(target=lambda: [load.send_v2(n) for n in range(MESSAGES)])]
        for sender in senders:
            sender.start()
        victim = nodes[0]
        held: list[int] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not held:
            if load.acked() >= (NOTIFICATIONS + MESSAGES) // 4:
                held = leases_held_by(db, victim)
            time.sleep(0.005)
        assert held, "node a never held a lease during the burst"
        victim.kill()
        killed_at = time.monotonic()
        for sender in senders:
            sender.join(120)
        assert len(load.acked_notifications) == NOTIFICATIONS
        assert len(load.acked_messages) == MESSAGES
        expected = NOTIFICATIONS + MESSAGES
        done = wait_until_applied(db, expected, 90)
        recovered = time.monotonic() - killed_at
        check_store(db, ehr.base, srs, held)
        by_a = sum(1 for v in [*load.acked_notifications.values(),
                               *load.acked_messages.values()] if v == "a")
        print(f"\ntwo nodes: {expected} inputs acknowledged ({by_a} by the killed node, "
              f"{load.resent} resent after the kill); {len(held)} items leased by the killed "
              f"node taken over; all applied {recovered:.1f} s after the kill "
              f"(burst {killed_at - started:.1f} s before it); {done} referrals")
    finally:
        for node in nodes:
            node.stop()
        db.dispose()


def wait_until_applied(db: Any, expected: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline:
        with db.read() as c:
            count = c.execute(sa.select(sa.func.count()).select_from(referrals)).scalar_one()
            open_work = c.execute(sa.select(sa.func.count()).select_from(work_items).where(
                work_items.c.status == "pending",
                work_items.c.kind.in_(INPUT_KINDS))).scalar_one()
        if count >= expected and open_work == 0:
            return int(count)
        time.sleep(0.5)
    raise AssertionError(f"only {count} of {expected} referrals after {seconds} s")


def check_store(db: Any, ehr_base: str, srs: list[dict[str, Any]], held: list[int]) -> None:
    with db.read() as c:
        keys = list(c.execute(sa.select(referrals.c.source_key)).scalars())
        detected = c.execute(sa.select(referral_events.c.referral_id, sa.func.count())
                             .where(referral_events.c.action == "detect")
                             .group_by(referral_events.c.referral_id)).all()
        inbox_keys = list(c.execute(sa.select(inbox.c.dedupe_key).where(
            inbox.c.dedupe_key.is_not(None))).scalars())
        taken_over = c.execute(sa.select(work_items.c.id, work_items.c.status).where(
            work_items.c.id.in_(held))).all()
    assert len(keys) == len(set(keys)) == NOTIFICATIONS + MESSAGES  # exactly once each
    fhir = {k for k in keys if k.startswith("fhir|")}
    assert fhir == {f"fhir|{ehr_base}|ServiceRequest/{sr['id']}" for sr in srs}
    assert sum(1 for k in keys if k.startswith(f"hl7|{SENDER}|")) == MESSAGES
    assert all(n == 1 for _rid, n in detected) and len(detected) == len(keys)  # applied once
    assert len(inbox_keys) == len(set(inbox_keys))
    assert {status for _id, status in taken_over} == {"done"}, taken_over


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_multi_host_database_url_reaches_the_live_server(database_url: str,
                                                           tmp_path: Path) -> None:
    """What docs/deploy.md recommends for a primary and a standby: libpq tries each host."""
    url = sa.engine.make_url(database_url)
    listed = (f"postgresql://{url.username}@/{url.database}?host=127.0.0.1:1"
              f"&host={url.host}:{url.port}&target_session_attrs=read-write")
    services = build_services(Settings(var_dir=tmp_path, database_url=listed))
    try:
        assert services.store.list(limit=1) == []
        assert services.db.dialect == "postgresql"
    finally:
        services.close()
