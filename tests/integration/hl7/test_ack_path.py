"""The ACK path under bad input, on SQLite and PostgreSQL, over real sockets: a bad message
never fails the good ones stored in the same group, a reused control id with new content is
kept as a conflict, frames have a whole-frame deadline, connections are capped, oversized
frames and unusable encoding characters are answered at once and kept in quarantine, and
several listener processes share one port."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
import sqlalchemy as sa

from hl7_bridge.config import Hl7Config, load_config
from hl7_bridge.framing import FrameDecoder, build_frame
from referrals.store.schema import inbox
from refloop.services import Services

from .conftest import listening


def message(control: str, *, app: str = "GOOD", body: str = "Doe^Pat") -> bytes:
    return (f"MSH|^~\\&|{app}|CLINIC|HUB|HUB|20240101120000||ADT^A04|{control}|P|2.5.1\r"
            f"PID|1||MRN-{control[:20]}^^^GC^MR||{body}||19800101|F\r").encode("latin-1")


BAD = {
    "nul": message("BAD\x00NUL"),
    "long-control-id": message("L" * 600),
    "long-sender": message("BADSENDER", app="A" * 300),
}


def exchange(port: int, raw: bytes, timeout: float = 20) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(build_frame(raw))
        return read_frame(sock)


def read_frame(sock: socket.socket) -> bytes:
    decoder = FrameDecoder()
    while True:
        data = sock.recv(65536)
        if not data:
            return b""
        frames = decoder.feed(data)
        if frames:
            return frames[0]


def msa(ack: bytes) -> list[str]:
    for line in ack.split(b"\r"):
        if line.startswith(b"MSA"):
            return line.decode("latin-1").split("|")
    raise AssertionError(f"no MSA in {ack!r}")


@pytest.fixture
def config() -> Hl7Config:
    return load_config({"port": 0})


@pytest.fixture
def port(services: Services, config: Hl7Config) -> Iterator[int]:
    with listening(services, config) as bound:
        yield bound


def rows(services: Services) -> list[dict[str, object]]:
    with services.db.read() as conn:
        return [dict(r) for r in conn.execute(
            sa.select(inbox.c.sender, inbox.c.dedupe_key, inbox.c.status, inbox.c.note)
            .order_by(inbox.c.id)).mappings()]


def test_bad_messages_in_a_group_fail_no_good_one(services: Services) -> None:
    """Stored as ONE group (the listener's group commit): the bad ones are answered AR with
    their reason and kept in quarantine; every good one is stored and answered AA."""
    intake = services.adapters["hl7"].intake
    good = [message(f"G{n:03d}") for n in range(15)]
    raws = good[:5] + list(BAD.values()) + good[5:]
    responses = intake.store([intake.assess_frame(raw) for raw in raws])
    codes = {msa(r or b"")[2].encode("latin-1")[:12]: msa(r or b"")[1] for r in responses}
    assert [msa(r or b"")[1] for r in responses[:5] + responses[8:]] == ["AA"] * 15
    assert [msa(r or b"")[1] for r in responses[5:8]] == ["AR"] * 3, codes
    assert b"ERR||MSH^1^10|102^" in (responses[5] or b"")
    assert b"ERR||MSH^1^10|104^" in (responses[6] or b"")
    assert b"ERR||MSH^1^3|104^" in (responses[7] or b"")
    stored = rows(services)
    assert sorted(str(r["dedupe_key"]) for r in stored if r["status"] == "received") == \
        sorted(f"hl7|GOOD^CLINIC|G{n:03d}" for n in range(15))
    rejected = [r for r in stored if r["status"] == "rejected"]
    assert len(rejected) == 3 and all(r["dedupe_key"] is None for r in rejected)
    assert len(services.quarantine.list()) == 3


def test_bad_and_good_messages_sent_concurrently(services: Services, port: int) -> None:
    """15 good messages on 15 connections and the three bad ones on three more, all at once."""
    raws = [message(f"C{n:03d}") for n in range(15)] + list(BAD.values())
    start = threading.Barrier(len(raws))

    def send(raw: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            start.wait()
            sock.sendall(build_frame(raw))
            return read_frame(sock)

    with ThreadPoolExecutor(len(raws)) as pool:
        acks = list(pool.map(send, raws))
    assert [msa(a)[1] for a in acks] == ["AA"] * 15 + ["AR"] * 3
    assert all(b"ERR|" in a for a in acks[15:])
    stored = rows(services)
    assert len([r for r in stored if r["status"] == "received"]) == 15
    assert len(services.quarantine.list()) == 3


def test_reused_control_id_with_new_content_is_kept_as_a_conflict(
        services: Services, port: int, caplog: pytest.LogCaptureFixture) -> None:
    first = message("RESET0001")
    assert msa(exchange(port, first))[1] == "AA"
    assert msa(exchange(port, first))[1] == "AA"  # a true duplicate: ACKed again
    changed = message("RESET0001", body="Roe^Other")
    with caplog.at_level(logging.WARNING, logger="refloop.hl7.intake"):
        ack = exchange(port, changed)
    assert msa(ack)[1] == "AE" and b"|205^" in ack
    alerts = [r for r in caplog.records if "reused with different content" in r.getMessage()]
    assert len(alerts) == 1 and alerts[0].control_id == "RESET0001"  # type: ignore[attr-defined]
    stored = rows(services)
    assert [r["status"] for r in stored] == ["received", "rejected"]
    (entry,) = services.quarantine.list()
    assert entry.reason.startswith("conflict:") and entry.original == changed
    assert services.work.counts() == {"pending": 1}  # only the first is mapped


def test_duplicate_inside_one_group(services: Services) -> None:
    intake = services.adapters["hl7"].intake
    same, other = message("DUP1"), message("DUP1", body="Roe^Other")
    responses = intake.store([intake.assess_frame(r) for r in (same, same, other)])
    assert [msa(r or b"")[1] for r in responses] == ["AA", "AA", "AE"]
    assert [r["status"] for r in rows(services)] == ["received", "rejected"]


@pytest.fixture
def strict(services: Services) -> Iterator[tuple[int, Hl7Config]]:
    config = replace(load_config({"port": 0}), read_timeout_seconds=1.0,
                     max_connections_per_source=2, max_message_bytes=2000)
    with listening(services, config) as bound:
        yield bound, config


def test_a_frame_trickled_byte_by_byte_is_cut_off(services: Services,
                                                  strict: tuple[int, Hl7Config]) -> None:
    """The frame deadline counts from the frame's first byte, not from the last read."""
    port, _ = strict
    frame = build_frame(message("SLOW0001"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        closed = False
        for byte in frame:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            sock.settimeout(0.1)
            try:
                if sock.recv(65536) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        assert closed, "a frame sent over far longer than read_timeout_seconds was accepted"
    assert rows(services) == []


def test_connections_are_capped_per_source(strict: tuple[int, Hl7Config]) -> None:
    port, _ = strict
    with socket.create_connection(("127.0.0.1", port), timeout=10) as one, \
            socket.create_connection(("127.0.0.1", port), timeout=10) as two:
        one.sendall(build_frame(message("CAP1")))
        assert msa(read_frame(one))[1] == "AA"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as three:
            try:
                three.sendall(build_frame(message("CAP3")))
                assert read_frame(three) == b""
            except ConnectionResetError:
                pass
        two.sendall(build_frame(message("CAP2")))
        assert msa(read_frame(two))[1] == "AA"
    # closed connections free their places
    assert msa(exchange(port, message("CAP4")))[1] == "AA"


def test_an_oversized_frame_is_answered_and_its_start_kept(
        services: Services, strict: tuple[int, Hl7Config]) -> None:
    port, _ = strict
    big = message("BIG0001") + b"NTE|1||" + b"x" * 5000 + b"\r"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(build_frame(big))
        ack = read_frame(sock)
        assert msa(ack)[1:3] == ["AR", "BIG0001"] and b"|104^" in ack
        assert sock.recv(100) == b""  # then closed
    (entry,) = services.quarantine.list()
    assert "larger than 2000 bytes" in entry.reason
    assert big.startswith(entry.original) and len(entry.original) > 1000


def test_unusable_encoding_characters_are_refused_at_once(services: Services,
                                                          port: int) -> None:
    raw = (b"MSH|^^^^|ENC|CLINIC|HUB|HUB|20240101120000||ADT^A04|ENC0001|P|2.5.1\r"
           b"PID|1||X^^^GC^MR||Doe^Pat\r")
    ack = exchange(port, raw)
    assert msa(ack)[1:3] == ["AR", "ENC0001"] and b"MSH^1^2|102^" in ack
    assert [r["status"] for r in rows(services)] == ["rejected"]
    assert services.work.counts() == {}


def test_several_listener_processes_share_the_port(services: Services) -> None:
    """Two listener processes behind one acceptor: every connection is served, a duplicate
    sent on another connection is answered as a duplicate and stored once, and each
    connection's answers come back in order."""
    from hl7_bridge.processes import run_listener_processes
    from refloop.wiring.hl7 import spawn_listener

    config = replace(load_config({"port": 0}), processes=2, connections_per_process=1)
    stop, ready, box = threading.Event(), threading.Event(), []
    thread = threading.Thread(target=run_listener_processes, kwargs={
        "config": config, "spawn": lambda channel, index: spawn_listener(
            services.settings, channel, index),
        "stop": stop, "ready": ready, "port_box": box}, daemon=True)
    thread.start()
    try:
        assert ready.wait(120), "the listener processes did not start"
        port = box[0]

        def stream(conn: int) -> list[str]:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                answers = []
                for n in range(20):
                    sock.sendall(build_frame(message(f"P{conn}-{n:02d}")))
                    answers.append(msa(read_frame(sock))[2])
                sock.sendall(build_frame(message("SHARED01")))
                answers.append(msa(read_frame(sock))[1])
                return answers

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(stream, range(4)))
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    for conn, answers in enumerate(results):
        assert answers[:20] == [f"P{conn}-{n:02d}" for n in range(20)]
        assert answers[20] == "AA"
    stored = [str(r["dedupe_key"]) for r in rows(services)]
    assert len(stored) == 81 and len(set(stored)) == 81
