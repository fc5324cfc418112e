"""Absolute URLs come only from public_base_url (or, unset, http://http_host:http_port): a
request's Host or X-Forwarded-Host never rewrites Bundle links, fullUrl, the CapabilityStatement
URL or the token endpoint; `refloop serve` refuses a non-loopback bind without public_base_url."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from referrals.model import Command, Referral, new_referral_id
from refloop.app import create_app
from refloop.cli import main
from refloop.services import build_services
from refloop.settings import Settings

EVIL = {"Host": "evil.example", "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "https", "Forwarded": "host=evil.example;proto=https"}


@pytest.fixture(autouse=True)
def keep_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def urls_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [u for v in value.values() for u in urls_in(v)]
    if isinstance(value, list):
        return [u for v in value for u in urls_in(v)]
    return [value] if isinstance(value, str) and value.startswith("http") else []


@pytest.mark.parametrize("public", ["https://refloop.example.org/base", ""])
def test_the_host_header_never_makes_a_url(database_url: str, tmp_path: Path, public: str,
                                           fhir_auth: Any) -> None:
    settings = Settings(var_dir=tmp_path / "var", database_url=database_url,
                        public_base_url=public, http_port=8123)
    expected = public or "http://127.0.0.1:8123"
    services = build_services(settings)
    try:
        for n in range(3):
            services.referrals.open(Referral(
                id=new_referral_id(), source_key=f"u|{n}", service_request=f"ServiceRequest/{n}",
                patient="Patient/1"), Command("detect"))
        client = create_app(services).test_client()
        headers = {**EVIL, **fhir_auth.headers(client, services)}
        bundle = client.get("/fhir/Task?_count=1", headers=headers).get_json()
        statement = client.get("/fhir/metadata", headers=EVIL).get_json()
        discovery = client.get("/.well-known/smart-configuration", headers=EVIL).get_json()
        found = urls_in(bundle) + urls_in(statement) + urls_in(discovery)
        ours = [u for u in found if "hl7.org" not in u and "smarthealthit" not in u
                and "dicom" not in u and "refloop.org/fhir/CodeSystem" not in u]
        assert len(ours) >= 8, ours  # 4 links, a fullUrl, the statement, 2 token URLs
        assert all(u.startswith(expected + "/") for u in ours), ours
        assert {link["relation"] for link in bundle["link"]} >= {"self", "next", "first"}
        assert bundle["entry"][0]["fullUrl"].startswith(expected + "/fhir/Task/")
        assert statement["implementation"]["url"] == expected + "/fhir"
        assert discovery["token_endpoint"] == expected + "/auth/token"
    finally:
        services.close()


@pytest.mark.parametrize("command", [["serve"], ["serve", "--role", "web"], ["demo"]])
@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "refloop.internal"])
def test_serve_refuses_a_public_bind_without_public_base_url(tmp_path: Path, host: str,
                                                             command: list[str]) -> None:
    env = {"REFLOOP_CONFIG": "", "REFLOOP_VAR_DIR": str(tmp_path / "var"),
           "REFLOOP_DATABASE_URL": "", "REFLOOP_HTTP_HOST": host, "REFLOOP_PUBLIC_BASE_URL": ""}
    result = CliRunner().invoke(main, command, env=env, catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert "public_base_url" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "var" / "refloop.db").exists()  # refused before anything started


def test_a_bad_public_base_url_or_proxy_is_named(tmp_path: Path) -> None:
    base = {"REFLOOP_CONFIG": "", "REFLOOP_VAR_DIR": str(tmp_path / "var")}
    for env, phrase in ((
            {"REFLOOP_PUBLIC_BASE_URL": "refloop.example.org"}, "REFLOOP_PUBLIC_BASE_URL"),
            ({"REFLOOP_TRUSTED_PROXIES": "10.0.0.1,proxy.example"}, "proxy.example")):
        result = CliRunner().invoke(main, ["db", "status"], env={**base, **env})
        assert result.exit_code == 1 and phrase in result.output, result.output
