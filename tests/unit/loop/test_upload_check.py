"""The upload check's answers to the person uploading: the limit said in megabytes as set
(never "0 MB" for a limit below one), and what is refused."""

from __future__ import annotations

import pytest

from loop.documents import check_pdf, megabytes
from referrals.errors import InboundError


def test_limits_read_as_set() -> None:
    assert [megabytes(n) for n in (10 * 1024 * 1024, 100_000, 2_621_440)] == ["10", "0.1", "2.5"]


@pytest.mark.parametrize(("content", "status", "said"), [
    (b"", 400, "Choose a PDF"),
    (b"%PDF-1.4" + b"x" * 200_000, 413, "larger than 0.1 MB"),
    (b"PK\x03\x04", 415, "not a PDF"),
])
def test_refusals_say_why(content: bytes, status: int, said: str) -> None:
    with pytest.raises(InboundError) as refused:
        check_pdf(content, 100_000)
    assert refused.value.status == status and said in str(refused.value)
