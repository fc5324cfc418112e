"""The HTTP edge's checks of a request's head (RFC 9112: CONNECT, upgrades, Host) against what
the edge does anyway for every request: parsing its line and headers with llhttp (httptools).

One process, no sockets: the same request head (a hook notification's, 9 headers) is parsed, and
its head checked, in alternating rounds; each round prints its figures, and the result is the
median of the rounds with the ratio of check to parse measured in the same run.

    .venv/bin/python bench/edge_head.py [--rounds 7] [--count 50000]

Prints `metric: value unit` lines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # before bench/ (names clash)

import httptools

from refloop.edge.head_rules import refusal

HEAD = (b"PUT /hooks/0123456789abcdef/ServiceRequest/sr-1 HTTP/1.1\r\nHost: refloop.example.org"
        b"\r\nUser-Agent: HAPI-FHIR\r\nAccept: application/fhir+json\r\nAuthorization: Bearer "
        b"s3cr3t-s3cr3t-s3cr3t\r\nContent-Type: application/fhir+json\r\nContent-Length: 2\r\n"
        b"Accept-Encoding: gzip\r\nConnection: keep-alive\r\nX-Request-Id: 42\r\n\r\n{}")


class Collect:
    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))


def parse(count: int) -> tuple[float, list[tuple[str, str]]]:
    started = time.perf_counter()
    for _ in range(count):
        collect = Collect()
        httptools.HttpRequestParser(collect).feed_data(HEAD)
    return (time.perf_counter() - started) / count, collect.headers


def check(count: int, headers: list[tuple[str, str]]) -> float:
    started = time.perf_counter()
    for _ in range(count):
        if refusal("PUT", "1.1", headers, False) is not None:
            raise SystemExit("the benchmark's request was refused")
    return (time.perf_counter() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--count", type=int, default=50000)
    args = parser.parse_args()
    parses, checks, ratios = [], [], []
    for n in range(args.rounds):
        parsed, headers = parse(args.count)
        checked = check(args.count, headers)
        parses.append(parsed)
        checks.append(checked)
        ratios.append(checked / parsed)
        print(f"round {n + 1}: parse {parsed * 1e6:.2f} us, check {checked * 1e6:.2f} us, "
              f"ratio {checked / parsed:.3f}")
    print(f"head_parse_baseline: {statistics.median(parses) * 1e6:.2f} us")
    print(f"head_rules_check: {statistics.median(checks) * 1e6:.2f} us")
    print(f"head_rules_check_vs_parse: {statistics.median(ratios):.3f} ratio")


if __name__ == "__main__":
    main()
