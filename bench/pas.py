"""bench/pas.py: PAS request bundles built and pre-flight checked per second, against parsing
the same bundles with fhir.resources (R4B models) alone, in the same run.

    .venv/bin/python bench/pas.py [--bundles N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir.resources.R4B.bundle import Bundle  # noqa: E402

from pas_client.bundle import build_request_bundle  # noqa: E402
from pas_client.config import from_settings  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundles", type=int, default=200)
    count = parser.parse_args().bundles
    config = from_settings({"organization_name": "Bench Clinic", "organization_npi": "1234567893"},
                           [{"name": "Bench payer", "base_url": "http://127.0.0.1:9",
                             "payer_id": "P1"}])
    payer = replace(config.payers[0])
    source = inputs(count)
    check_bundle(build_request_bundle(source[0], payer, config).bundle)  # warm caches
    start = time.perf_counter()
    bundles, errors = [], 0
    for item in source:
        built = build_request_bundle(item, payer, config)
        errors += sum(f.severity == "error" for f in check_bundle(built.bundle))
        bundles.append(json.dumps(built.bundle))
    ours = time.perf_counter() - start
    start = time.perf_counter()
    for text in bundles:
        Bundle.model_validate_json(text)
    baseline = time.perf_counter() - start
    print(f"bundles: {count} count")
    print(f"errors_found: {errors} count")
    print(f"build_and_check: {count / ours:.1f} bundles/s")
    print(f"fhir_resources_parse: {count / baseline:.1f} bundles/s")
    print(f"ratio_build_check_vs_parse: {baseline / ours:.3f} x")


if __name__ == "__main__":
    main()
