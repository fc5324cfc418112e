"""bench/pas.py: PAS request bundles built and pre-flight checked, against parsing the same
bundles with fhir.resources (R4B models) alone, in the same run.

Build: per bundle (p50/p95), over referrals of every shape the builder converts (a plain
referral, a dated order, a multi-visit order, an order with a performer, a child dependent),
alternating rounds with the baseline parse of the bundles built. Build and check together:
bundles per second, as before.

    .venv/bin/python bench/pas.py [--bundles N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir.resources.R4B.bundle import Bundle  # noqa: E402

from pas_client.bundle import build_request_bundle  # noqa: E402
from pas_client.config import from_settings  # noqa: E402
from pas_client.conformance import check_bundle  # noqa: E402
from pas_client.inputs import ClaimInputs, gather_inputs  # noqa: E402
from refloop.demo import demo_resources  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundles", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    count = args.bundles
    config = from_settings({"organization_name": "Bench Clinic", "organization_npi": "1234567893",
                            "organization_tin": "123456789"},
                           [{"name": "Bench payer", "base_url": "http://127.0.0.1:9",
                             "payer_id": "P1"}])
    payer = config.payers[0]
    source = inputs(count)
    check_bundle(build_request_bundle(source[0], payer, config).bundle)  # warm caches
    build_times: list[float] = []
    parse_times: list[float] = []
    ratios: list[float] = []
    for _ in range(args.rounds):  # alternating: build a round, then parse what it built
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
    start = time.perf_counter()
    errors = 0
    for item in source:
        errors += sum(f.severity == "error" for f in check_bundle(
            build_request_bundle(item, payer, config).bundle))
    both = time.perf_counter() - start
    print(f"bundles: {count} count ({', '.join(SHAPES)} in turn), rounds: {args.rounds} count")
    print(f"errors_found: {errors} count")
    print(f"build_p50: {percentile(build_times, 0.5) * 1000:.3f} ms")
    print(f"build_p95: {percentile(build_times, 0.95) * 1000:.3f} ms")
    print(f"fhir_resources_parse_p50: {percentile(parse_times, 0.5) * 1000:.3f} ms")
    print(f"fhir_resources_parse_p95: {percentile(parse_times, 0.95) * 1000:.3f} ms")
    print(f"ratio_build_vs_parse_p50: {statistics.median(ratios):.3f} x "
          f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"build_and_check: {count / both:.1f} bundles/s")
    print(f"build_and_check_per_bundle: {both / count * 1000:.2f} ms")


if __name__ == "__main__":
    main()
