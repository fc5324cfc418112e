"""Only real referrals: a ServiceRequest becomes a referral only in a referral category (SNOMED CT
3457005 "patient referral" by default, or the configured codes). The server filters by category
where its criteria allow it, and Refloop checks again, for servers that ignore part of the
criteria. A lab order (SNOMED CT 108252007) never becomes a referral."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import requests
from click.testing import CliRunner

from referrals.worker import Worker
from refloop.cli import main
from refloop.services import Services
from refloop.wiring import all_handlers
from subscriptions.adapter import SubscriptionsAdapter
from subscriptions.mapping import source_key

SCT = "http://snomed.info/sct"


def adapter(services: Services) -> SubscriptionsAdapter:
    found: SubscriptionsAdapter = services.adapters["subscriptions"]
    return found


def drain(services: Services) -> int:
    return Worker(services.work, all_handlers(services)).drain()


def with_category(sr: dict[str, Any], system: str, code: str, display: str) -> dict[str, Any]:
    return {**sr, "category": [{"coding": [{"system": system, "code": code,
                                            "display": display}]}]}


def lab_order(kit: SimpleNamespace, p: str, d: str) -> dict[str, Any]:
    sr = with_category(kit.service_request(p, d), SCT, "108252007", "Laboratory procedure")
    return {**sr, "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7",
                                       "display": "Glucose"}]}}


def test_a_lab_order_never_becomes_a_referral(sekmet: Any, listener: Any,
                                              kit: SimpleNamespace) -> None:
    services = listener.services
    outcome = adapter(services).register(sekmet.base)
    assert outcome.criteria == f"ServiceRequest?intent=order&category={SCT}|3457005"
    assert "patient referral" in outcome.detects and "category" in outcome.detects
    held = sekmet.read(f"Subscription/{outcome.subscription_id}")
    assert held["criteria"] == outcome.criteria  # the server filters where it can

    p = sekmet.create(kit.patient())["id"]
    d = sekmet.create(kit.practitioner())["id"]
    lab = sekmet.create(lab_order(kit, p, d))
    referral_sr = sekmet.create(kit.service_request(p, d))
    key = source_key(sekmet.base, referral_sr["id"])
    kit.wait_for(lambda: drain(services) >= 0 and services.store.try_get_by_source(key), 15,
                 "the referral was not detected")

    # a server that ignores the category in its criteria would deliver the lab order anyway
    hook = adapter(services).registry.try_get_hook(outcome.hook_id or "")
    assert hook is not None
    reply = requests.put(f"{hook.url}/ServiceRequest/{lab['id']}", json=lab, timeout=10,
                         # the secret is stored as a hash: the sender's copy is in the header
                         headers={"Authorization": held["channel"]["header"][0].split(": ")[1],
                                  "Content-Type": "application/fhir+json"})
    assert reply.status_code == 200
    drain(services)
    adapter(services).reconcile(sekmet.base)  # and a poll never opens it either
    assert services.store.try_get_by_source(source_key(sekmet.base, lab["id"])) is None
    assert services.inbox.counts().get("processed", 0) >= 2


def test_register_with_local_categories_says_what_it_detects(
        database_url: str, tmp_path: Path, sekmet: Any, kit: SimpleNamespace) -> None:
    config = tmp_path / "refloop.toml"
    config.write_text(f'database_url = "{database_url}"\nvar_dir = "{tmp_path / "var"}"\n'
                      f'log_level = "WARNING"\n')
    runner = CliRunner()
    base = ["--config", str(config)]
    p = sekmet.create(kit.patient())["id"]
    d = sekmet.create(kit.practitioner())["id"]
    local = sekmet.create(with_category(kit.service_request(p, d), "urn:example:local", "REF",
                                        "Referral (local)"))
    snomed_only = sekmet.create(kit.service_request(p, d))

    first = runner.invoke(main, [*base, "register", "--fhir-base", sekmet.base])
    assert first.exit_code == 0, first.output
    assert f"category {SCT}|3457005 (patient referral)" in first.output

    result = runner.invoke(main, [*base, "register", "--fhir-base", sekmet.base,
                                  "--criteria", "ServiceRequest?intent=order",
                                  "--category", "urn:example:local|REF", "--json"])
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert outcome["criteria"] == "ServiceRequest?intent=order&category=urn:example:local|REF"
    assert "category urn:example:local|REF" in outcome["detects"]
    assert "Refloop checks intent, category again" in outcome["detects"]

    listed = json.loads(runner.invoke(main, [*base, "subscriptions", "list", "--json"]).stdout)
    assert sorted(r["status"] for r in listed) == ["active", "replaced"]  # the old one went
    old = next(r for r in listed if r["status"] == "replaced")
    assert requests.get(f"{sekmet.base}/Subscription/{old['subscription_id']}",
                        timeout=10).status_code in (404, 410)

    polled = runner.invoke(main, [*base, "reconcile", "--fhir-base", sekmet.base, "--json"])
    assert polled.exit_code == 0, polled.output
    services = kit.build_listener_services(database_url, tmp_path / "var")
    try:
        assert services.store.try_get_by_source(source_key(sekmet.base, local["id"]))
        assert services.store.try_get_by_source(
            source_key(sekmet.base, snomed_only["id"])) is None
    finally:
        services.close()
