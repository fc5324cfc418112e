"""MLLP listener benchmark: messages/s ACKed after durable storage (SQLite) over 1, 4 and 16
persistent connections, messages/s mapped into the referral lifecycle, and python-hl7 /
hl7apy parse-only rates of the same messages as baselines measured in the same run.

    .venv/bin/python bench/mllp.py [--messages 2000] [--baseline-seconds 2]

The listener runs as its own process (`refloop serve --role mllp`), the senders are asyncio
clients in this process, each waiting for its ACK before sending the next message.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FIXTURES = ROOT / "fixtures" / "hl7v2"
REF = (FIXTURES / "authored__bench_REF_I12_v251_21seg.hl7").read_bytes()
ADT = (FIXTURES / "authored__bench_ADT_A04_v251_20seg.hl7").read_bytes()


def message(n: int) -> bytes:
    """Alternate REF^I12 (a new referral each) and ADT^A04, each with its own MSH-10."""
    if n % 2:
        return ADT.replace(b"|BENCH0001|", f"|A{n:09d}|".encode())
    return REF.replace(b"R-88812", f"R{n:09d}".encode()).replace(
        b"|BENCH0002|", f"|R{n:09d}|".encode())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_listener(config: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REFLOOP_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "refloop", "--config", str(config), "serve",
                             "--role", "mllp"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the mllp role did not start")


async def sender(port: int, numbers: range) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    accepted = 0
    for n in numbers:
        writer.write(b"\x0b" + message(n) + b"\x1c\r")
        await writer.drain()
        ack = await reader.readuntil(b"\x1c\r")
        accepted += b"MSA|CA|" in ack or b"MSA|AA|" in ack
    writer.close()
    return accepted


async def run_clients(port: int, connections: int, start: int, total: int) -> tuple[float, int]:
    per = total // connections
    began = time.perf_counter()
    counts = await asyncio.gather(*(sender(port, range(start + i * per, start + (i + 1) * per))
                                    for i in range(connections)))
    return time.perf_counter() - began, sum(counts)


def rate_of(fn: object, raw: bytes, seconds: float) -> float:
    count, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        fn(raw)  # type: ignore[operator]
        count += 1
    return count / (time.perf_counter() - began)


def baselines(seconds: float) -> tuple[float, float]:
    import hl7
    from hl7apy.parser import parse_message

    text = REF.decode("utf-8").replace("\n", "\r")
    python_hl7 = rate_of(lambda _: hl7.parse(text), REF, seconds)
    hl7apy = rate_of(lambda _: parse_message(text, find_groups=False), REF, seconds)
    return python_hl7, hl7apy


def mapping_rate(url: str, var: Path) -> tuple[float, int]:
    from referrals.worker import Worker
    from refloop.services import build_services
    from refloop.settings import Settings
    from refloop.wiring import all_handlers

    services = build_services(Settings(var_dir=var, database_url=url))
    handlers = {k: v for k, v in all_handlers(services).items() if k == "hl7.message"}
    worker = Worker(services.work, handlers, batch=50)
    began = time.perf_counter()
    done = worker.drain()
    elapsed = time.perf_counter() - began
    services.close()
    return done / elapsed if elapsed else 0.0, done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000, help="per connection count")
    parser.add_argument("--baseline-seconds", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port, url = free_port(), f"sqlite:///{tmp}/bench.db"
        config = Path(tmp) / "refloop.toml"
        config.write_text(f'database_url = "{url}"\nvar_dir = "{tmp}"\n[hl7]\nport = {port}\n',
                          encoding="utf-8")
        proc = start_listener(config, port)
        rates: dict[int, float] = {}
        try:
            start = 0
            for connections in (1, 4, 16):
                total = args.messages - args.messages % connections
                elapsed, accepted = asyncio.run(run_clients(port, connections, start, total))
                start += total
                assert accepted == total, f"only {accepted} of {total} accepted"
                rates[connections] = total / elapsed
                print(f"acked_{connections}_connections: {rates[connections]:.0f} msg/s")
        finally:
            proc.terminate()
            proc.wait(15)
        mapped, done = mapping_rate(url, Path(tmp))
        print(f"mapped_into_lifecycle: {mapped:.0f} msg/s ({done} messages)")
    python_hl7, hl7apy = baselines(args.baseline_seconds)
    print(f"baseline_python_hl7_parse_only: {python_hl7:.0f} msg/s")
    print(f"baseline_hl7apy_parse_only: {hl7apy:.1f} msg/s")
    best = max(rates.values())
    print(f"ratio_acked_vs_python_hl7_parse: {best / python_hl7:.2f} x")
    print(f"ratio_acked_vs_hl7apy_parse: {best / hl7apy:.1f} x")
    print(f"ratio_mapped_vs_python_hl7_parse: {mapped / python_hl7:.2f} x")


if __name__ == "__main__":
    main()
