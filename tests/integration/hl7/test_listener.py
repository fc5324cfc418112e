"""The MLLP listener on loopback with python-hl7's MLLP client (the v2 peer), on SQLite and
PostgreSQL: fixture messages get the right ACKs, raw streams, duplicates, big messages,
hypothesis fuzzing over the socket (every frame gets an ACK or a clean close, the listener
keeps serving)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from hl7.client import MLLPClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hl7_bridge.config import load_config
from hl7_bridge.framing import FrameDecoder, build_frame, is_r2_block
from hl7_bridge.header import parse_header
from hl7_bridge.listener import run_listener
from referrals.store.schema import inbox
from refloop.services import Services

from .conftest import FIXTURES, fixture


@pytest.fixture
def port(services: Services) -> Iterator[int]:
    config = load_config({"port": 0, "processing_ids": ["P", "T"]})
    adapter = services.adapters["hl7"]
    adapter.intake.config = config
    stop, ready, box = threading.Event(), threading.Event(), []
    thread = threading.Thread(target=run_listener, args=(config, adapter.intake, stop, ready,
                                                         box), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield box[0]
    stop.set()
    thread.join(10)


def msa(ack: bytes) -> list[str]:
    body = ack.strip(b"\x0b\x1c\r")
    separator = chr(body[3])
    for line in body.split(b"\r"):
        if line.startswith(b"MSA"):
            return line.decode("latin-1").split(separator)
    raise AssertionError(f"no MSA in {ack!r}")


def messages() -> list[str]:
    skip = (".json", ".bin", ".md", ".txt")
    return sorted(p.name for p in FIXTURES.iterdir()
                  if not p.name.endswith(skip) and "__ACK_" not in p.name
                  and "bad_batch" not in p.name and "sample_file" not in p.name
                  and "sample_batch" not in p.name)


def expected_code(raw: bytes) -> set[str]:
    header = parse_header(raw)
    supported = {"ADT", "REF", "RRI", "OMG", "ORM", "SIU", "MDM", "ORU"}
    if header.message_type not in supported or header.trigger_event in ("A03", "A24", "Z99"):
        return {"AR", "CR"}
    return {"AA", "CA", "AE", "CE"}


def test_python_hl7_client_gets_the_right_acks(port: int, services: Services) -> None:
    with MLLPClient("127.0.0.1", port) as client:
        for name in messages():
            raw = fixture(name)
            if parse_header(raw).accept_ack_type in ("NE", "ER"):
                continue  # enhanced mode, no accept ACK wanted: the listener sends none
            fields = msa(client.send_message(raw))
            assert fields[2] == parse_header(raw).control_id, name
            assert fields[1] in expected_code(raw), (name, fields)
        # the same connection, a resend: ACKed again, stored once
        raw = fixture("authored__REF_I12_new_referral_utf8.hl7")
        assert msa(client.send_message(raw))[1] == "CA"
    with services.db.read() as conn:
        stored = conn.execute(sa.select(sa.func.count()).select_from(inbox).where(
            inbox.c.dedupe_key == "hl7|GPSYS^GPCLINIC|GP000101")).scalar()
    assert stored == 1


def test_large_message_and_raw_streams(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        decoder = FrameDecoder()
        big = fixture("authored__MDM_T02_large_base64_pdf.hl7")
        sock.sendall(build_frame(big))
        assert msa(_read(sock, decoder, 1)[0])[1:3] == ["CA", "CON0001"]  # enhanced mode
        sock.sendall(fixture("authored__mllp_stream_two_frames_with_noise.bin"))
        acks = _read(sock, decoder, 2)
        assert [msa(a)[1] for a in acks] == ["CA", "CA"]
        # an ACK and MLLP R2 blocks get no answer; the next message still does
        sock.sendall(build_frame(fixture("authored__ACK_original_AA.hl7")))
        sock.sendall(fixture("authored__mllp_r2_commit_ack_and_nak.bin"))
        sock.sendall(fixture("authored__mllp_frame_split_across_reads.bin"))
        assert len(_read(sock, decoder, 1)) == 1


def _read(sock: socket.socket, decoder: FrameDecoder, count: int) -> list[bytes]:
    frames: list[bytes] = []
    while len(frames) < count:
        data = sock.recv(65536)
        if not data:
            break
        frames += decoder.feed(data)
    return frames


frame_bodies = st.one_of(
    # an MLLP release 2 block (0x06 or 0x15 alone) is a transport ACK and gets no answer
    st.binary(max_size=200).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b""))
    .filter(lambda b: not is_r2_block(b)),
    st.builds(lambda ctl, body: b"MSH|^~\\&|FUZZ|X|HUB|HUB|20240101||ADT^A04|" + ctl +
              b"|P|2.5.1\rPID|1||" + body,
              st.binary(min_size=1, max_size=12).map(
                  lambda b: b.replace(b"\x0b", b"1").replace(b"\x1c", b"2")
                  .replace(b"|", b"3").replace(b"\r", b"4").replace(b"\n", b"5")),
              st.binary(max_size=80).map(lambda b: b.replace(b"\x0b", b"")
                                          .replace(b"\x1c", b""))))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bodies=st.lists(frame_bodies, min_size=1, max_size=4))
def test_fuzz_every_frame_gets_an_ack_or_a_clean_close(port: int, bodies: list[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"".join(build_frame(b) for b in bodies))
        acks = _read(sock, FrameDecoder(), len(bodies))
        assert len(acks) == len(bodies)
        for ack in acks:
            assert msa(ack)[1] in ("AA", "AE", "AR")
    with MLLPClient("127.0.0.1", port) as client:  # still serving
        assert msa(client.send_message(fixture("authored__SIU_S26_noshow.hl7")))[1] == "CA"


def test_a_sender_that_half_closes_still_gets_its_acks(port: int) -> None:
    """A sender that shuts down its write side after its frames (as `nc -N` does) was never
    answered, although its messages were stored: it resent them forever."""
    raw = fixture("authored__REF_I12_new_referral_utf8.hl7")
    second = raw.replace(b"|GP000101|", b"|GP000102|")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(build_frame(raw) + build_frame(second) + b"\x0bMSH|partial")
        sock.shutdown(socket.SHUT_WR)
        acks = _read(sock, FrameDecoder(), 3)
    assert [msa(ack)[2] for ack in acks] == ["GP000101", "GP000102"]
