"""JSON request bodies, parsed with a nesting limit: a body nested deeper than the limit is bad
input with a clear message, never a RecursionError. Only JSON as RFC 8259 defines it: UTF-8 (a
BOM tolerated, not UTF-16 or UTF-32), and no NaN, Infinity, number too large for a double or
integer beyond 64 bits (the store's JSON columns hold none of them as given)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from referrals.errors import InboundError

MAX_DEPTH = 200
#: a JSON string (skipped: brackets inside strings do not nest) or one bracket
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


def parse_json(raw: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of `raw` (UTF-8, BOM tolerated); InboundError for anything else."""
    if raw.count(b"[") + raw.count(b"{") > max_depth:  # else the depth cannot exceed the limit
        _check_depth(raw, max_depth)
    try:
        return json.loads(raw.decode("utf-8-sig"), parse_constant=_not_json,
                          parse_float=_finite, parse_int=_int64)
    except RecursionError as exc:  # unreachable after the depth check; kept as a guard
        raise _too_deep(max_depth) from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise InboundError(f"the body is not valid JSON: {exc}", code="structure") from exc


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:20]}... is too large")
    return value


def _int64(text: str) -> int:
    value = int(text)
    if not -2**63 <= value < 2**64:
        raise ValueError(f"the integer {text[:20]}... is beyond 64 bits")
    return value


def _check_depth(raw: bytes, max_depth: int) -> None:
    depth = 0
    for match in _TOKEN.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                raise _too_deep(max_depth)
        elif token in (b"]", b"}"):
            depth -= 1


def _too_deep(max_depth: int) -> InboundError:
    return InboundError(f"the JSON body is nested deeper than {max_depth} levels",
                        code="too-costly")
