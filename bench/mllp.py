"""MLLP benchmark: Refloop's durable ACK against HAPI HL7v2's in-memory ACK, in the same run.

    .venv/bin/python bench/mllp.py [--messages 20000] [--rounds 3] [--connections 1,4,16]
                                   [--processes N] [--skip-ack | --skip-mapping]
                                   [--mapping-messages 20000] [--store-size N] [--store FILE]

ACK section. Starts the HAPI HL7v2 peer (interop/hapi-hl7v2: HAPI HL7v2 2.6.0, a receiving
application that answers `generateACK()` and stores nothing) and `refloop serve --role mllp` on
SQLite with `synchronous=FULL` (every ACK follows an fsync'd commit), then sends the same
REF^I12 v2.5.1 messages to each, `--messages` per server and connection count, over 1, 4 and
16 persistent connections, each connection waiting for its ACK before sending the next
message. Rounds alternate which server goes first. Each server gets a warm-up first (the JVM
compiles its hot code). Prints, per connection count, the median over the rounds of msg/s and
of the p50/p99 ACK latency, Refloop's messages per commit (rows sharing one commit's
timestamp), and the ratio Refloop/HAPI; at the end it checks that every message Refloop ACKed
is stored exactly once.

Mapping section (bench/hl7_mapping.py): how fast stored messages become referrals. A burst of
`--mapping-messages` REF^I12 (new referrals, new patients) and then one of ADT^A04 are stored
and mapped by one worker set up as the worker role sets it up; with `--store-size N` the REF^I12
burst runs again on a store grown to N referrals. Each rate is printed with the store size it
ran at, against python-hl7's parse-only rate of the same REF^I12 messages in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hl7_mapping import add_arguments as add_mapping_arguments  # noqa: E402
from hl7_mapping import mapping_section  # noqa: E402

FIXTURES = ROOT / "fixtures" / "hl7v2"
REF = (FIXTURES / "authored__bench_REF_I12_v251_21seg.hl7").read_bytes().replace(b"\n", b"\r")
ADT = (FIXTURES / "authored__bench_ADT_A04_v251_20seg.hl7").read_bytes()
HAPI_RUN = ROOT / "interop" / "hapi-hl7v2" / "run"
SB, END = b"\x0b", b"\x1c\r"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ref_message(control: str) -> bytes:
    """The bench REF^I12 with its own MSH-10 and RF1-6 (a new referral each)."""
    return REF.replace(b"|BENCH0002|", f"|{control}|".encode()).replace(
        b"R-88812", control.encode())


# --- load generator ----------------------------------------------------------------------------

@dataclass
class Result:
    seconds: float
    cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    refused: int = 0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


class _Sender(asyncio.Protocol):
    """One connection: send, wait for the ACK, send the next (one message in flight)."""

    def __init__(self, messages: list[tuple[str, bytes]], result: Result,
                 done: asyncio.Future[None]) -> None:
        self.messages, self.result, self.done = messages, result, done
        self.index, self.buffer, self.sent_at = 0, b"", 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        if self.index >= len(self.messages):
            self.transport.close()
            if not self.done.done():
                self.done.set_result(None)
            return
        self.sent_at = time.perf_counter()
        self.transport.write(SB + self.messages[self.index][1] + END)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(END)
        if end < 0:
            return
        ack, self.buffer = self.buffer[:end], self.buffer[end + 2:]
        self.result.latencies.append(time.perf_counter() - self.sent_at)
        if b"MSA|AA|" in ack or b"MSA|CA|" in ack:
            self.result.acked.append(self.messages[self.index][0])
        else:
            self.result.refused += 1
        self.index += 1
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("the server closed the connection"))


async def _run(port: int, batches: list[list[tuple[str, bytes]]]) -> Result:
    loop = asyncio.get_running_loop()
    result = Result(0.0)
    dones = [loop.create_future() for _ in batches]
    began = time.perf_counter()
    for batch, done in zip(batches, dones, strict=True):
        transport, _ = await loop.create_connection(lambda b=batch, d=done: _Sender(b, result, d),
                                                    "127.0.0.1", port)
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP,
                                                       socket.TCP_NODELAY, 1)
    await asyncio.gather(*dones)
    result.seconds = time.perf_counter() - began
    return result


def send(port: int, prefix: str, total: int, connections: int, pid: int = 0) -> Result:
    per = total // connections
    batches = [[(f"{prefix}{c:02d}{n:06d}", b"") for n in range(per)] for c in range(connections)]
    batches = [[(control, ref_message(control)) for control, _ in batch] for batch in batches]
    before = cpu_seconds(pid) if pid else 0.0
    result = asyncio.run(_run(port, batches))
    result.cpu = cpu_seconds(pid) - before if pid else 0.0
    return result


# --- the two servers ---------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of `pid` and its child processes, from /proc."""
    total, pending, seen = 0.0, [pid], set()
    ticks = os.sysconf("SC_CLK_TCK")
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending += [int(c) for c in children]
        except (OSError, ValueError, IndexError):
            continue
    return total


def start_hapi(data: Path) -> tuple[int, dict[str, str], int]:
    env = {**os.environ, "HAPI_HL7V2_DATA_DIR": str(data)}
    port = free_port()
    done = subprocess.run([str(HAPI_RUN), "start", str(port)], env=env, text=True,
                          capture_output=True, check=False, timeout=1200)
    if done.returncode != 0:
        raise SystemExit(f"the HAPI HL7v2 peer did not start (needs Java 17 and Maven):\n"
                         f"{done.stderr[-2000:]}")
    return port, env, int((data / "peer.pid").read_text())


def stop_hapi(env: dict[str, str]) -> None:
    subprocess.run([str(HAPI_RUN), "stop"], env=env, capture_output=True, check=False,
                   timeout=60)


def start_refloop(tmp: Path, processes: int, per_process: int = 4
                  ) -> tuple[subprocess.Popen[bytes], int, str]:
    port, url = free_port(), f"sqlite:///{tmp}/bench.db"
    config = tmp / "refloop.toml"
    config.write_text(f'database_url = "{url}"\nvar_dir = "{tmp}"\nsqlite_synchronous = "FULL"\n'
                      f"[hl7]\nport = {port}\nprocesses = {processes}\n"
                      f"connections_per_process = {per_process}\n", encoding="utf-8")
    env = {**os.environ, "REFLOOP_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "refloop", "--config", str(config), "serve",
                             "--role", "mllp"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the mllp role did not start")


def commit_latency(directory: Path, count: int = 300) -> float:
    """Median time of one bare SQLite commit (WAL, synchronous=FULL, a 3 KB row) on this disk,
    now: with one message in flight per connection, N connections cannot ACK faster than N per
    commit, whoever writes."""
    import sqlite3

    path = directory / "fsync-probe.db"
    for leftover in directory.glob("fsync-probe.db*"):
        leftover.unlink()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA wal_autocheckpoint=100")  # the WAL is reused, as in a long run
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
    times = []
    for n in range(2 * count):
        began = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (body) VALUES (?)", (REF,))
        conn.execute("COMMIT")
        if n >= count:  # after a first pass that grows the WAL to its size
            times.append(time.perf_counter() - began)
    conn.close()
    return statistics.median(times)


def stored(url: str) -> tuple[dict[str, int], dict[str, float]]:
    """Stored rows per MSH-10, and messages per commit per connection-count prefix."""
    import sqlalchemy as sa

    from referrals.store import connect
    from referrals.store.schema import inbox

    db = connect(url)
    with db.read() as conn:
        rows = conn.execute(sa.select(inbox.c.headers, inbox.c.received_at)).all()
    db.dispose()
    counts: dict[str, int] = {}
    commits: dict[str, set[object]] = {}
    messages: dict[str, int] = {}
    for headers, received_at in rows:
        control = str(headers.get("control_id", ""))
        counts[control] = counts.get(control, 0) + 1
        group = control[:4]  # R<round><connections:02d>
        commits.setdefault(group, set()).add(received_at)
        messages[group] = messages.get(group, 0) + 1
    return counts, {g: messages[g] / len(commits[g]) for g in messages}


# --- sections ------------------------------------------------------------------------------------

def ack_section(args: argparse.Namespace) -> None:
    connections = [int(c) for c in args.connections.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        hapi_port, hapi_env, hapi_pid = start_hapi(Path(tmp) / "hapi")
        proc, port, url = start_refloop(Path(tmp), args.processes, args.connections_per_process)
        pids = {"hapi": hapi_pid, "refloop": proc.pid}
        results: dict[tuple[str, int], list[Result]] = {}
        acked: list[str] = []
        commits: list[float] = []
        try:
            for name, target in (("hapi", hapi_port), ("refloop", port)):
                send(target, "W0" if name == "refloop" else "H0", args.warmup, 4)
            for rnd in range(1, args.rounds + 1):
                commits.append(commit_latency(Path(tmp)))
                order = [("hapi", hapi_port), ("refloop", port)]
                if rnd % 2 == 0:
                    order.reverse()
                for count in connections:
                    for name, target in order:
                        result = send(target, f"R{rnd}{count:02d}", args.messages, count,
                                      pids[name])
                        results.setdefault((name, count), []).append(result)
                        if name == "refloop":
                            acked += result.acked
                        print(f"# round {rnd}, {count} connections, {name}: "
                              f"{result.rate:.0f} msg/s", file=sys.stderr, flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
            stop_hapi(hapi_env)
        counts, per_commit = stored(url)
    commit = statistics.median(commits)
    print(f"sqlite_full_commit_p50: {commit * 1e6:.0f} us (bare 3 KB insert, this disk, now)")
    for count in connections:
        figures = {}
        for name in ("hapi", "refloop"):
            runs = results[(name, count)]
            figures[name] = statistics.median(r.rate for r in runs)
            p50 = statistics.median(r.percentile(0.50) for r in runs)
            p99 = statistics.median(r.percentile(0.99) for r in runs)
            print(f"{name}_{count}_connections: {figures[name]:.0f} msg/s")
            print(f"{name}_{count}_connections_ack_p50: {p50:.2f} ms")
            print(f"{name}_{count}_connections_ack_p99: {p99:.2f} ms")
            cpu = statistics.median(r.cpu / len(r.latencies) * 1e6 for r in runs)
            print(f"{name}_{count}_connections_cpu_per_message: {cpu:.0f} us")
        batches = [v for k, v in per_commit.items() if k.endswith(f"{count:02d}")
                   and k.startswith("R")]
        print(f"refloop_{count}_connections_messages_per_commit: "
              f"{statistics.median(batches) if batches else 0:.2f}")
        print(f"fsync_bound_{count}_connections: {count / commit:.0f} msg/s (one commit per "
              f"{count} messages)")
        print(f"ratio_refloop_vs_hapi_{count}_connections: "
              f"{figures['refloop'] / figures['hapi']:.2f} x")
    once = sum(1 for control in acked if counts.get(control) == 1)
    print(f"refloop_acked_messages_stored_exactly_once: {once} of {len(acked)}")
    if once != len(acked):
        raise SystemExit("some ACKed messages are missing or stored twice")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20000,
                        help="messages per server, per connection count, per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", default="1,4,16")
    parser.add_argument("--warmup", type=int, default=4000)
    parser.add_argument("--processes", type=int, default=0,
                        help="Refloop listener processes ([hl7] processes; 0 = one per core)")
    parser.add_argument("--connections-per-process", type=int, default=4,
                        help="[hl7] connections_per_process")
    parser.add_argument("--skip-ack", action="store_true", help="run the mapping section only")
    parser.add_argument("--skip-mapping", action="store_true")
    add_mapping_arguments(parser)
    args = parser.parse_args()
    if not args.skip_ack:
        ack_section(args)
    if not args.skip_mapping:
        mapping_section(args)


if __name__ == "__main__":
    main()
