"""MLLP framing: <SB> payload <EB><CR>, read as a stream (frames split or joined across reads).

Bytes before a start block are skipped (stray CR/LF, NULs between frames). A frame ends at the
end block; the CR after it is expected but a missing CR is tolerated (the next bytes are skipped
as junk until the following start block). MLLP release 2 commit ACK/NAK blocks (one byte 0x06
or 0x15) come out as frames like any other; the listener ignores them.
"""

from __future__ import annotations

SB, EB, CR = b"\x0b", b"\x1c", b"\x0d"
R2_ACK, R2_NAK = b"\x06", b"\x15"


#: how much of a frame over the limit is kept (in quarantine) for people to read
HEAD_KEPT = 65536


class FrameTooLarge(Exception):
    """A frame grew beyond the configured maximum; `head` holds its first bytes."""

    def __init__(self, limit: int, head: bytes) -> None:
        self.limit = limit
        self.head = head
        super().__init__(f"MLLP frame larger than {limit} bytes")


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, get whole frames back."""

    def __init__(self, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self.skipped = 0  # junk bytes dropped outside frames, for logs

    @property
    def pending(self) -> bool:
        """True while part of a frame is buffered (the read timeout applies)."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        while True:
            start = self._buffer.find(SB)
            if start < 0:
                self.skipped += len(self._buffer)
                self._buffer.clear()
                return frames
            if start:
                self.skipped += start
                del self._buffer[:start]
            end = self._buffer.find(EB, 1)
            if end < 0:
                if len(self._buffer) - 1 > self.max_bytes:
                    head = bytes(self._buffer[1:HEAD_KEPT + 1])
                    self._buffer.clear()
                    raise FrameTooLarge(self.max_bytes, head)
                return frames
            if end - 1 > self.max_bytes:
                head = bytes(self._buffer[1:min(end, HEAD_KEPT + 1)])
                del self._buffer[:end + 1]
                raise FrameTooLarge(self.max_bytes, head)
            frames.append(bytes(self._buffer[1:end]))
            cut = end + 2 if self._buffer[end + 1:end + 2] == CR else end + 1
            del self._buffer[:cut]


def build_frame(payload: bytes) -> bytes:
    """Wrap a message for the wire. The payload must not contain SB or EB."""
    return SB + payload + EB + CR


def is_r2_block(frame: bytes) -> bool:
    """An MLLP release 2 transport acknowledgement (ACK 0x06 / NAK 0x15), not an HL7 message."""
    return frame in (R2_ACK, R2_NAK)
