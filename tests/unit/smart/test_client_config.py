"""`refloop smart client-config`: what IT registers in each EHR, as text and JSON."""

from __future__ import annotations

import json

from click.testing import CliRunner

from refloop.cli import main

CONFIG = """
public_base_url = "https://refloop.example.org"
[smart]
[[smart.tenants]]
name = "north"
iss = ["https://ehr.example/fhir/r4"]
client_id = "refloop-north"
private_key_file = "/etc/refloop/smart.pem"
kid = "north-2025"
ehr_origins = ["https://ehr.example"]
scopes = "launch openid fhirUser online_access user/ServiceRequest.rs"
[[smart.tenants]]
name = "south"
iss = "https://south.example/fhir"
client_id = "refloop-south"
client_secret_env = "SOUTH_SECRET"
ehr_origins = "https://south.example"
"""


def test_client_config_json(tmp_path):
    path = tmp_path / "refloop.toml"
    path.write_text(CONFIG)
    result = CliRunner().invoke(main, ["--config", str(path), "smart", "client-config",
                                       "--json"], env={"SOUTH_SECRET": "S3cr3t-South"})
    assert result.exit_code == 0, result.output
    assert "S3cr3t-South" not in result.output
    info = json.loads(result.stdout)
    assert info["launch_url"] == "https://refloop.example.org/smart/launch"
    assert info["redirect_uri"] == "https://refloop.example.org/smart/callback"
    assert info["jwks_url"] == "https://refloop.example.org/smart/jwks.json"
    north, south = info["tenants"]
    assert north["token_endpoint_auth_method"] == "private_key_jwt" and north["kid"] == \
        "north-2025"
    assert north["scopes"] == "launch openid fhirUser online_access user/ServiceRequest.rs"
    assert south["token_endpoint_auth_method"] == "client_secret_basic"


def test_client_config_text(tmp_path):
    path = tmp_path / "refloop.toml"
    path.write_text(CONFIG)
    result = CliRunner().invoke(main, ["--config", str(path), "smart", "client-config"],
                                env={"SOUTH_SECRET": "x"})
    assert result.exit_code == 0, result.output
    assert "Launch URL:    https://refloop.example.org/smart/launch" in result.output
    assert "iss allowed: https://ehr.example/fhir/r4" in result.output
    assert "frame-ancestors: https://south.example" in result.output


def test_client_config_shows_each_tenants_referrals_and_warns_about_an_unlimited_one(tmp_path):
    path = tmp_path / "refloop.toml"
    linked = CONFIG.replace('kid = "north-2025"', 'kid = "north-2025"\naccess_tenant = "n"')
    path.write_text(linked + '[[access.tenants]]\nname = "n"\nsources = ["hl7|NORTH"]\n')
    result = CliRunner().invoke(main, ["--config", str(path), "smart", "client-config"],
                                env={"SOUTH_SECRET": "x"})
    assert result.exit_code == 0, result.output
    assert "referrals shown: access tenant n: hl7|NORTH" in result.stdout
    assert "referrals shown: every referral (no access_tenant)" in result.stdout
    assert "Warning: [smart] has 2 tenants and south has no access_tenant" in result.stderr
    path.write_text(linked)  # no such [[access.tenants]] entry
    unknown = CliRunner().invoke(main, ["--config", str(path), "smart", "client-config"],
                                 env={"SOUTH_SECRET": "x"})
    assert unknown.exit_code != 0
    assert "access_tenant 'n' is not the name of an [[access.tenants]] entry" in unknown.output
