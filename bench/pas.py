"""bench/pas.py: PAS request bundles built, and built + pre-flight checked, per bundle, against a
plain fhir.resources (R4B models) parse of the same bundles, measured in the same run.

Inputs: the demo referrals in every shape the builder converts (a plain referral, a dated
order, a multi-visit order, an order with a performer, a child dependent), in turn.

* Build: per bundle (p50/p95), alternating rounds with the baseline parse of the bundles built.
* Build + check: per bundle (p50/p95) for bundles of 1 and 20 items, alternating per bundle
  with the baseline parse of the same bundle. The builder makes one item per order; the
  20-item bundle is the built bundle whose Claim carries 19 more items (the order's item
  again, renumbered, with their own trace numbers), as a multi-service request does. The plan
  is compiled before timing starts (`compile_ms` says how long that takes once per process).

    .venv/bin/python bench/pas.py [--bundles N] [--rounds R]
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
from refloop.demo_data import demo_resources  # noqa: E402

NPI = "http://hl7.org/fhir/sid/us-npi"
SHAPES = ("plain", "dated", "multi-visit", "performer", "dependent")


def shaped(item: dict[str, Any], shape: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The demo referral's resources, changed into one of the shapes."""
    held = {(r["resourceType"], r["id"]): r for r in demo_resources(item).values()}
    order = held[("ServiceRequest", item["key"])]
    if shape == "dated":
        order["occurrenceDateTime"] = "2026-03-02T09:30:00-05:00"
    elif shape == "multi-visit":
        order["quantityQuantity"] = {"value": 3, "unit": "visits", "code": "{visit}"}
        order["occurrencePeriod"] = {"start": "2026-05-01", "end": "2026-07-31"}
    elif shape == "performer":
        held[("Practitioner", "p1")] = {"resourceType": "Practitioner", "id": "p1",
                                        "identifier": [{"system": NPI, "value": "1972845014"}],
                                        "name": [{"text": "Dr. Maya Ortiz"}]}
        held[("Organization", "o1")] = {"resourceType": "Organization", "id": "o1",
                                        "name": "Heart Center", "identifier": [
                                            {"system": NPI, "value": "1558367219"}]}
        held[("PractitionerRole", "r1")] = {
            "resourceType": "PractitionerRole", "id": "r1",
            "practitioner": {"reference": "Practitioner/p1"},
            "organization": {"reference": "Organization/o1"},
            "telecom": [{"system": "phone", "value": "555-0101"}]}
        order["performer"] = [{"reference": "PractitionerRole/r1"}]
    elif shape == "dependent":
        held[("Patient", "parent")] = {"resourceType": "Patient", "id": "parent",
                                       "identifier": [{"system": "urn:x", "value": "P1"}],
                                       "name": [{"family": "Doe"}], "gender": "female"}
        held[("Coverage", item["key"])].update({
            "subscriber": {"reference": "Patient/parent"},
            "relationship": {"coding": [{"code": "child"}]}})
    return held


def inputs(count: int) -> list[ClaimInputs]:
    items = json.loads((ROOT / "fixtures" / "demo" / "referrals.json").read_text("utf-8"))
    found = []
    for n in range(count):
        item = items[n % len(items)]
        held = shaped(item, SHAPES[n % len(SHAPES)])
        gathered = gather_inputs(f"r{n}", item["priority"], f"ServiceRequest/{item['key']}",
                                 f"Patient/{item['key']}",
                                 lambda t, i, h=held: h.get((t, i)))
        assert isinstance(gathered, ClaimInputs)
        found.append(gathered)
    return found


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = run()
    return (time.perf_counter() - start) * 1000, result


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


def measure_build(source: list[ClaimInputs], payer: PayerConfig, config: PasConfig,
                  rounds: int) -> None:
    build_times: list[float] = []
    parse_times: list[float] = []
    ratios: list[float] = []
    for _ in range(rounds):  # alternating: build a round, then parse what it built
        built, round_build = [], []
        for item in source:
            start = time.perf_counter()
            bundle = build_request_bundle(item, payer, config).bundle
            round_build.append(time.perf_counter() - start)
            built.append(json.dumps(bundle))
        round_parse = []
        for text in built:
            start = time.perf_counter()
            Bundle.model_validate_json(text)
            round_parse.append(time.perf_counter() - start)
        build_times += round_build
        parse_times += round_parse
        ratios.append(statistics.median(round_build) / statistics.median(round_parse))
    print(f"build_p50: {percentile(build_times, 0.5) * 1000:.3f} ms")
    print(f"build_p95: {percentile(build_times, 0.95) * 1000:.3f} ms")
    print(f"fhir_resources_parse_p50: {percentile(parse_times, 0.5) * 1000:.3f} ms")
    print(f"fhir_resources_parse_p95: {percentile(parse_times, 0.95) * 1000:.3f} ms")
    print(f"ratio_build_vs_parse_p50: {statistics.median(ratios):.3f} x "
          f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})")


def measure_check(items: int, sources: list[ClaimInputs], payer: PayerConfig,
                  config: PasConfig, rounds: int) -> None:
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
    print(f"{label}_build_check_p50: {percentile(ours, 0.5):.2f} ms")
    print(f"{label}_build_check_p95: {percentile(ours, 0.95):.2f} ms")
    if parse:
        print(f"{label}_fhir_resources_parse_p50: {percentile(parse, 0.5):.2f} ms")
        print(f"{label}_fhir_resources_parse_p95: {percentile(parse, 0.95):.2f} ms")
        print(f"{label}_ratio_build_check_over_parse_p50: "
              f"{percentile(ours, 0.5) / percentile(parse, 0.5):.2f} x")
    if failures:
        print(f"{label}_fhir_resources_parse_failures: {failures} count")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundles", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = from_settings({"organization_name": "Bench Clinic", "organization_npi": "1234567893",
                            "organization_tin": "123456789"},
                           [{"name": "Bench payer", "base_url": "http://127.0.0.1:9",
                             "payer_id": "P1"}])
    payer = config.payers[0]
    source = inputs(args.bundles)
    elapsed, _ = timed(lambda: check_bundle(build(source[0], payer, config, 1)))
    print(f"bundles: {args.bundles} count ({', '.join(SHAPES)} in turn), "
          f"rounds: {args.rounds} count")
    print(f"compile_ms: {elapsed:.1f} ms")
    Bundle.model_validate(build(source[0], payer, config, 1))  # warm pydantic
    measure_build(source, payer, config, args.rounds)
    for items in (1, 20):
        measure_check(items, source, payer, config, args.rounds)


if __name__ == "__main__":
    main()
