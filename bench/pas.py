"""bench/pas.py: build + pre-flight check per PAS request bundle (p50/p95), for bundles of 1
and 20 items, against a plain fhir.resources (R4B models) parse of the same bundle, measured
in the same run, alternating per bundle.

    .venv/bin/python bench/pas.py [--bundles N] [--rounds R]

The builder makes one item per order; the 20-item bundle is the built bundle whose Claim
carries 19 more items (the order's item again, renumbered, with their own trace numbers), as a
multi-service request does. Times are per bundle; the plan is compiled before timing starts
(`compile_ms` says how long that takes once per process).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir.resources.R4B.bundle import Bundle  # noqa: E402

from pas_client.bundle import build_request_bundle  # noqa: E402
from pas_client.config import PasConfig, PayerConfig, from_settings  # noqa: E402
from pas_client.conformance import check_bundle  # noqa: E402
from pas_client.inputs import ClaimInputs, gather_inputs  # noqa: E402
from refloop.demo import demo_resources  # noqa: E402


def inputs(count: int) -> list[ClaimInputs]:
    items = json.loads((ROOT / "fixtures" / "demo" / "referrals.json").read_text("utf-8"))
    found = []
    for n in range(count):
        item = items[n % len(items)]
        resources = demo_resources(item)
        gathered = gather_inputs(f"r{n}", item["priority"], f"ServiceRequest/{item['key']}",
                                 f"Patient/{item['key']}", lambda t, _i, r=resources: r.get(t))
        assert isinstance(gathered, ClaimInputs)
        found.append(gathered)
    return found


def build(source: ClaimInputs, payer: PayerConfig, config: PasConfig, items: int
          ) -> dict[str, Any]:
    bundle = build_request_bundle(source, payer, config).bundle
    claim = bundle["entry"][0]["resource"]
    first = claim["item"][0]
    for sequence in range(2, items + 1):
        item = copy.deepcopy(first)
        item["sequence"] = sequence
        for extension in item["extension"]:
            if extension["url"].endswith("itemTraceNumber"):
                extension["valueIdentifier"]["value"] = uuid.uuid4().hex[:16].upper()
        claim["item"].append(item)
    return bundle


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = run()
    return (time.perf_counter() - start) * 1000, result


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def measure(items: int, sources: list[ClaimInputs], payer: PayerConfig, config: PasConfig,
            rounds: int) -> None:
    ours: list[float] = []
    parse: list[float] = []
    errors = failures = 0
    for _ in range(rounds):
        for source in sources:
            elapsed, findings = timed(lambda s=source: check_bundle(build(s, payer, config,
                                                                          items)))
            ours.append(elapsed)
            errors += sum(f.severity == "error" for f in findings)
            bundle = build(source, payer, config, items)
            try:
                parse.append(timed(lambda b=bundle: Bundle.model_validate(b))[0])
            except ValueError:
                failures += 1
    label = f"items_{items}"
    print(f"{label}_bundles: {len(ours)} count")
    print(f"{label}_check_errors: {errors} count")
    print(f"{label}_build_check_p50: {statistics.median(ours):.2f} ms")
    print(f"{label}_build_check_p95: {p95(ours):.2f} ms")
    if parse:
        print(f"{label}_fhir_resources_parse_p50: {statistics.median(parse):.2f} ms")
        print(f"{label}_fhir_resources_parse_p95: {p95(parse):.2f} ms")
        print(f"{label}_ratio_build_check_over_parse_p50: "
              f"{statistics.median(ours) / statistics.median(parse):.2f} x")
    if failures:
        print(f"{label}_fhir_resources_parse_failures: {failures} count")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundles", type=int, default=64, help="distinct referrals")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = from_settings({"organization_name": "Bench Clinic", "organization_npi": "1234567893"},
                           [{"name": "Bench payer", "base_url": "http://127.0.0.1:9",
                             "payer_id": "P1"}])
    payer = config.payers[0]
    sources = inputs(args.bundles)
    elapsed, _ = timed(lambda: check_bundle(build(sources[0], payer, config, 1)))
    print(f"compile_ms: {elapsed:.1f} ms")
    Bundle.model_validate(build(sources[0], payer, config, 1))  # warm pydantic
    for items in (1, 20):
        measure(items, sources, payer, config, args.rounds)


if __name__ == "__main__":
    main()
