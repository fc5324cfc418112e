"""The JSON columns' writer (referrals/store/database.py `dumps`) against orjson's plain path it
is built on: what its refusals cost (a search for `null` in the text, and a walk for NaN through
a value that holds one). A FHIR Patient body holds no null; a referral's state holds several.

One process, no database: each value is written with both, in alternating rounds; each round
prints its figures, and the result is the median of the rounds with the ratio of the writer to
the plain path measured in the same run.

    .venv/bin/python bench/json_columns.py [--rounds 7] [--count 20000]

Prints `metric: value unit` lines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # before bench/ (names clash)

import orjson

from referrals.codec import referral_to_dict
from referrals.model import Referral
from referrals.store.database import dumps

PATIENT = {"resourceType": "Patient", "id": "p1",
           "meta": {"versionId": "3", "lastUpdated": "2026-01-01T00:00:00Z"},
           "identifier": [{"system": "urn:oid:1.2.3", "value": str(i)} for i in range(4)],
           "name": [{"family": "Ó Súilleabháin", "given": ["Áine", "M"]}], "gender": "female",
           "birthDate": "1970-01-01", "telecom": [{"system": "phone", "value": "+15550100"}],
           "address": [{"line": ["1 Main St"], "city": "Springfield", "postalCode": "12345"}]}
STATE = referral_to_dict(Referral(id="0190a000-0000-7000-8000-000000000001",
                                  source_key="hl7|CLINIC|1", service_request="ServiceRequest/1",
                                  patient="Patient/1"))


def plain(value: Any) -> str:
    return orjson.dumps(value).decode()


def timed(write: Callable[[Any], str], value: Any, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        write(value)
    return (time.perf_counter() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--count", type=int, default=20000)
    args = parser.parse_args()
    for name, value in (("patient", PATIENT), ("state", STATE)):
        bases, writes, ratios = [], [], []
        for n in range(args.rounds):
            base = timed(plain, value, args.count)
            write = timed(dumps, value, args.count)
            bases.append(base)
            writes.append(write)
            ratios.append(write / base)
            print(f"{name} round {n + 1}: plain {base * 1e6:.3f} us, dumps {write * 1e6:.3f} us, "
                  f"ratio {write / base:.2f}")
        print(f"json_{name}_plain_baseline: {statistics.median(bases) * 1e6:.3f} us")
        print(f"json_{name}_dumps: {statistics.median(writes) * 1e6:.3f} us")
        print(f"json_{name}_dumps_vs_plain: {statistics.median(ratios):.2f} ratio")


if __name__ == "__main__":
    main()
