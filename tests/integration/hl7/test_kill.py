"""Kill the listener role (`refloop serve --role mllp` with two listener processes, SIGKILL)
while two senders stream, one on each process: every message that was ACKed is in the store
exactly once after the restart, and no listener process outlives the role."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from hl7_bridge.framing import FrameDecoder, build_frame
from referrals.store import connect
from referrals.store.schema import inbox

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(config: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REFLOOP_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "refloop", "--config", str(config), "serve",
                             "--role", "mllp"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("the mllp role did not start")


def message(n: int) -> bytes:
    return (f"MSH|^~\\&|KILL|TEST|HUB|HUB|20240101120000||ADT^A04|K{n:05d}|P|2.5.1\r"
            f"PID|1||MRN{n}^^^KT^MR||Doe^Pat||19800101|F\r").encode()


def stream(port: int, first: int, count: int, acked: list[int]) -> None:
    """Send messages one by one (waiting for each ACK) until the peer goes away."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            decoder = FrameDecoder()
            for n in range(first, first + count):
                sock.sendall(build_frame(message(n)))
                frames: list[bytes] = []
                while not frames:
                    data = sock.recv(65536)
                    if not data:
                        return
                    frames = decoder.feed(data)
                if b"MSA|AA|" in frames[0]:
                    acked.append(n)
    except OSError:
        return


def test_every_acked_message_survives_a_kill(tmp_path: Path) -> None:
    """Two listener processes, one sender connection on each, killed together mid-stream."""
    import threading

    port = free_port()
    url = f"sqlite:///{tmp_path / 'refloop.db'}"
    config = tmp_path / "refloop.toml"
    config.write_text(f'database_url = "{url}"\nvar_dir = "{tmp_path}"\n'
                      f'[hl7]\nport = {port}\nprocesses = 2\nconnections_per_process = 1\n',
                      encoding="utf-8")
    firsts = (0, 50_000)
    acked: dict[int, list[int]] = {first: [] for first in firsts}
    proc = start(config, port)
    senders = [threading.Thread(target=stream, args=(port, first, 40_000, acked[first]))
               for first in firsts]
    for sender in senders:
        sender.start()
    while min(len(a) for a in acked.values()) < 150 and all(s.is_alive() for s in senders):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    for sender in senders:
        sender.join(10)
        assert not sender.is_alive(), "a listener process outlived its killed role"
    assert min(len(a) for a in acked.values()) >= 150
    # restart; each sender resends from its last unacknowledged message plus a few before it
    proc = start(config, port)
    more: list[int] = []
    try:
        for first in firsts:
            resent: list[int] = []
            stream(port, max(acked[first]) - 5, 50, resent)
            assert len(resent) == 50
            more += resent
    finally:
        proc.terminate()
        proc.wait(15)
    db = connect(url)
    with db.read() as conn:
        keys = conn.execute(sa.select(inbox.c.dedupe_key)).scalars().all()
    db.dispose()
    stored = [k for k in keys if k and k.startswith("hl7|KILL^TEST|")]
    assert len(stored) == len(set(stored))  # exactly once
    present = set(stored)
    for n in {n for a in acked.values() for n in a} | set(more):
        assert f"hl7|KILL^TEST|K{n:05d}" in present, n
