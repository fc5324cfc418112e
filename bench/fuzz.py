"""Fuzz benchmark (run by hand, not in CI): generated inputs through the notification parser
(JSON bytes -> subscriptions.endpoint's decoding -> parse_notification), the FHIR facade's query
parser (capability.search.parse_task_query) and the MLLP framing (hl7_bridge.framing).

A crash is any exception other than the refusal each one is built to raise (InboundError;
FrameTooLarge for framing). Inputs come from a seeded generator: mutations of the official
notification examples (a node replaced by a value of another JSON type, removed, duplicated or
wrapped; raw bytes flipped, cut or repeated), parameter lists from the facade's vocabulary with
mutated dates and numbers, and byte streams of MLLP blocks with noise, split at random.

Prints `metric: value unit` lines: inputs and inputs per second per target (time spent in the
target only, not in generating), crashes (target 0), and, as the same-run baseline, json.loads
over the same notification bytes.

Usage: python bench/fuzz.py [--inputs N] [--seed S]   (N per target; default 400000 each)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import random
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from capability.search import parse_task_query  # noqa: E402
from hl7_bridge.framing import EB, SB, FrameDecoder, FrameTooLarge  # noqa: E402
from referrals.errors import InboundError  # noqa: E402
from subscriptions.endpoint import _decode  # noqa: E402
from subscriptions.notification import parse_notification  # noqa: E402

FIXTURES = ROOT / "fixtures" / "subscriptions"
VALUES: list[Any] = [None, True, False, 0, -1, 7, 2 ** 70, 1.5, "", "x", "ServiceRequest/1",
                     "http://e/fhir/ServiceRequest/1/_history/2", [], [1], {}, {"a": 1},
                     {"reference": 5}, {"coding": 3}, {"coding": [5]}, "9" * 30, "\x00",
                     "event-notification", "handshake", "Parameters", "Bundle", "\ud800"]
NAMES = ["_id", "status", "business-status", "patient", "owner", "focus", "_lastUpdated",
         "_count", "_offset", "_sort", "_format", "status:not", "bogus", "", "\x00"]


def seeds() -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in sorted(FIXTURES.rglob("*.json"))
             if "Bundle" in p.name]
    found.append({"resourceType": "ServiceRequest", "id": "1", "status": "active",
                  "meta": {"versionId": "2"}, "subject": {"reference": "Patient/1"}})
    return found


def nodes(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from nodes(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from nodes(item, (*path, index))


def mutate(rng: random.Random, seed: Any) -> Any:
    value = copy.deepcopy(seed)
    for _ in range(rng.randint(1, 3)):
        paths = list(nodes(value))[1:]  # again after each change: the tree is new
        if not paths:
            break
        path = rng.choice(paths)
        parent = value
        for key in path[:-1]:
            parent = parent[key]
        current = parent[path[-1]]
        choice = rng.random()
        if choice < 0.6:
            parent[path[-1]] = copy.deepcopy(rng.choice(VALUES))
        elif choice < 0.75 and isinstance(parent, dict):
            del parent[path[-1]]
        elif choice < 0.9:
            parent[path[-1]] = [copy.deepcopy(current) for _ in range(rng.randint(0, 3))]
        else:
            parent[path[-1]] = {"resource": current, "entry": copy.deepcopy(current)}
    return value


def mutate_bytes(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    choice = rng.random()
    if choice < 0.4 and data:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif choice < 0.6:
        data = data[: rng.randrange(len(data) + 1)]
    elif choice < 0.8:
        depth = rng.choice([10, 199, 201, 1000, 5000])
        data = bytearray(b"[" * depth + bytes(data) + b"]" * depth)
    else:
        start = rng.randrange(len(data) + 1)
        data[start:start] = data[start: start + rng.randint(1, 64)] * rng.randint(1, 4)
    return bytes(data)


def notification_inputs(rng: random.Random, count: int) -> Iterator[tuple[str, str, bytes]]:
    bases = seeds()
    encoded = [json.dumps(b).encode() for b in bases]
    for n in range(count):
        method = rng.choice(["POST", "POST", "PUT", "DELETE"])
        subpath = rng.choice(["", "", "ServiceRequest/1", "ServiceRequest", "a/b/c", "x/1"])
        if n % 4 == 3:
            yield method, subpath, mutate_bytes(rng, rng.choice(encoded))
        else:
            yield method, subpath, json.dumps(mutate(rng, rng.choice(bases))).encode()


def date_like(rng: random.Random) -> str:
    prefix = rng.choice(["", "ge", "gt", "le", "lt", "eq", "ne", "sa", "xx"])
    year = rng.choice(["0000", "0001", "2026", "9999", "99999", "20x6"])
    text = year + rng.choice(["", "-01", "-12", "-13", "-02-30", "-12-31",
                              "-12-31T23:59:59", "-01-01T00:00:00+14:00",
                              "-12-31T23:59:59-12:00", "-06-01T10:00Z", "-06-01T10:00:00.1234567Z",
                              "-06-01T25:00:00Z", "T", "-1-1"])
    return prefix + text


def query_inputs(rng: random.Random, count: int) -> Iterator[list[tuple[str, str]]]:
    for _ in range(count):
        args = []
        for _ in range(rng.randint(0, 5)):
            name = rng.choice(NAMES)
            kind = rng.random()
            if kind < 0.35:
                value = date_like(rng)
            elif kind < 0.6:
                value = rng.choice(["0", "5", "-1", "+5", "1e3", str(2 ** 63), "9" * 25,
                                    "\u0663", "", " ", "1000000001"])
            elif kind < 0.8:
                value = rng.choice(["requested", "completed", "bogus", "2.0", "5.1.1",
                                    "http://hl7.org/fhir/task-status|accepted", "a|b|c",
                                    "Patient/1", "1,2,,3", "-_lastUpdated", "_lastUpdated"])
            else:
                value = "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randint(0, 12)))
            args.append((name, value))
        yield args


def framing_inputs(rng: random.Random, count: int) -> Iterator[list[bytes]]:
    for _ in range(count):
        stream = bytearray()
        for _ in range(rng.randint(0, 4)):
            part = rng.random()
            if part < 0.5:
                stream += SB + bytes(rng.randrange(256) for _ in range(rng.randint(0, 40))) + \
                    EB + b"\r"
            elif part < 0.7:
                stream += SB * rng.randint(1, 3)
            elif part < 0.85:
                stream += EB + b"\r\n\x00"
            else:
                stream += bytes(rng.randrange(256) for _ in range(rng.randint(0, 80)))
        cuts = sorted(rng.randrange(len(stream) + 1) for _ in range(rng.randint(0, 3)))
        pieces, last = [], 0
        for cut in cuts:
            pieces.append(bytes(stream[last:cut]))
            last = cut
        pieces.append(bytes(stream[last:]))
        yield pieces


def run(name: str, inputs: Iterator[Any], attempt: Callable[[Any], None],
        crashes: dict[str, list[str]]) -> tuple[int, float]:
    """(inputs, seconds spent in `attempt` alone: generating them is not counted)."""
    count = 0
    spent = 0.0
    clock = time.perf_counter
    for item in inputs:
        count += 1
        started = clock()
        try:
            attempt(item)
        except (InboundError, FrameTooLarge):
            pass
        except Exception:  # a crash: keep the first few, with the input
            found = crashes.setdefault(name, [])
            found.append(f"{traceback.format_exc(limit=3)}\ninput: {item!r:.300}"
                         if len(found) < 5 else "")
        spent += clock() - started
        if count % 100000 == 0:
            print(f"{name}: {count}", file=sys.stderr)
    return count, spent


def parse_notification_bytes(item: tuple[str, str, bytes]) -> None:
    method, subpath, raw = item
    parse_notification(method, subpath, _decode(raw, "application/fhir+json", 200))


def feed_frames(pieces: list[bytes]) -> None:
    decoder = FrameDecoder(max_bytes=64)
    for piece in pieces:
        for frame in decoder.feed(piece):
            assert isinstance(frame, bytes)


def json_only(item: tuple[str, str, bytes]) -> None:
    with contextlib.suppress(ValueError, RecursionError):
        json.loads(item[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=400_000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=20261204)
    options = parser.parse_args()
    crashes: dict[str, list[str]] = {}
    results = {
        "notification": run("notification", notification_inputs(
            random.Random(options.seed), options.inputs), parse_notification_bytes, crashes),
        "json_loads_baseline": run("json_loads_baseline", notification_inputs(
            random.Random(options.seed), options.inputs), json_only, crashes),
        "facade_query": run("facade_query", query_inputs(
            random.Random(options.seed + 1), options.inputs), parse_task_query, crashes),
        "mllp_framing": run("mllp_framing", framing_inputs(
            random.Random(options.seed + 2), options.inputs), feed_frames, crashes),
    }
    total = 0
    for name, (count, seconds) in results.items():
        if name != "json_loads_baseline":
            total += count
        print(f"{name}_inputs: {count} count")
        print(f"{name}_rate: {count / seconds:.0f} inputs/s")
        print(f"{name}_crashes: {len(crashes.get(name, []))} count")
    print(f"inputs_total: {total} count")
    note, base = results["notification"], results["json_loads_baseline"]
    print(f"notification_vs_json_loads: {(note[0] / note[1]) / (base[0] / base[1]):.2f} x")
    for name, found in crashes.items():
        for text in found[:5]:
            print(f"--- crash in {name}:\n{text}", file=sys.stderr)
    if any(name != "json_loads_baseline" for name in crashes):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
