"""MLLP framing: frames split across reads, junk, missing CR, R2 blocks, size limit, fuzzing."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hl7_bridge.framing import FrameDecoder, FrameTooLarge, build_frame, is_r2_block

from .conftest import fixture


def chunks(data: bytes, rng: random.Random) -> list[bytes]:
    out, at = [], 0
    while at < len(data):
        size = rng.randint(1, 40)
        out.append(data[at:at + size])
        at += size
    return out


def test_frame_split_across_reads_in_random_chunks() -> None:
    stream = fixture("authored__mllp_frame_split_across_reads.bin")
    for seed in range(20):
        decoder, frames = FrameDecoder(), []
        for piece in chunks(stream, random.Random(seed)):
            frames += decoder.feed(piece)
        assert len(frames) == 1 and frames[0].startswith(b"MSH|")
        assert frames[0] == stream[1:stream.index(b"\x1c")]


def test_two_frames_with_noise_between() -> None:
    frames = FrameDecoder().feed(fixture("authored__mllp_stream_two_frames_with_noise.bin"))
    assert [f[:3] for f in frames] == [b"MSH", b"MSH"]
    assert b"ADT^A08" in frames[0] and b"SIU^S15" in frames[1]


def test_missing_trailing_cr_is_tolerated() -> None:
    decoder = FrameDecoder()
    frames = decoder.feed(fixture("authored__mllp_missing_trailing_cr.bin"))
    assert len(frames) == 1 and frames[0].startswith(b"MSH")
    assert decoder.feed(build_frame(b"MSH|^~\\&|next")) == [b"MSH|^~\\&|next"]


def test_r2_commit_ack_and_nak_blocks() -> None:
    frames = FrameDecoder().feed(fixture("authored__mllp_r2_commit_ack_and_nak.bin"))
    assert frames == [b"\x06", b"\x15"] and all(is_r2_block(f) for f in frames)


def test_maximum_size() -> None:
    decoder = FrameDecoder(max_bytes=100)
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(b"\x0bMSH|^~\\&|" + b"x" * 200)
    assert caught.value.head.startswith(b"MSH|")
    assert decoder.feed(build_frame(b"ok")) == [b"ok"]


@settings(max_examples=200, deadline=None)
@given(payloads=st.lists(st.binary(max_size=300).map(
    lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b"")), max_size=5),
    junk=st.binary(max_size=20).map(lambda b: b.replace(b"\x0b", b"")),
    seed=st.integers(0, 10_000))
def test_fuzz_any_split_gives_back_the_payloads(payloads: list[bytes], junk: bytes,
                                                seed: int) -> None:
    stream = junk + b"".join(build_frame(p) for p in payloads)
    decoder, frames = FrameDecoder(), []
    for piece in chunks(stream, random.Random(seed)):
        frames += decoder.feed(piece)
    assert frames == payloads


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_arbitrary_bytes_never_crash(data: bytes) -> None:
    decoder = FrameDecoder(max_bytes=500)
    try:
        frames = decoder.feed(data)
    except FrameTooLarge:
        return
    assert all(b"\x0b" not in f[:0] for f in frames)


def test_a_frame_over_the_limit_keeps_its_first_64_kib() -> None:
    """As docs/hl7v2.md says (4 KiB were kept, too little to find the segment at fault)."""
    decoder = FrameDecoder(max_bytes=100_000)
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(b"\x0bMSH|^~\\&|" + b"x" * 200_000 + b"\x1c\r")
    assert len(caught.value.head) == 65536 and caught.value.head.startswith(b"MSH|")
