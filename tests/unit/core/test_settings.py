"""Settings from one TOML file plus REFLOOP_* variables, and the errors that say what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from refloop.settings import Settings, SettingsError, load_settings

TOML = """
database_url = "postgresql://refloop@db.internal:5432/refloop"
http_port = 9000
lease_seconds = 30.5
var_dir = "/srv/refloop/var"
log_format = "text"

[hl7]
port = 2575
senders = ["EPIC", "CERNER"]

[[fhir_servers]]
name = "ehr"
base_url = "https://ehr.example.org/fhir"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "refloop.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.http_host == "127.0.0.1"  # bind to loopback unless configured
    assert settings.database == f"sqlite:///{(tmp_path / 'var' / 'refloop.db').resolve()}"
    assert settings.base_url == "http://127.0.0.1:8080"


def test_file_values_are_typed_and_sections_kept(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, TOML), environ={})
    assert settings.database_url == "postgresql://refloop@db.internal:5432/refloop"
    assert settings.database == settings.database_url
    assert settings.http_port == 9000 and settings.lease_seconds == 30.5
    assert settings.var_dir == Path("/srv/refloop/var") and settings.log_format == "text"
    assert settings.section("hl7") == {"port": 2575, "senders": ["EPIC", "CERNER"]}
    assert settings.section("fhir_servers")[0]["name"] == "ehr"
    assert settings.section("absent") == {}
    assert settings.config_file == tmp_path / "refloop.toml"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    env = {"REFLOOP_HTTP_PORT": "9100", "REFLOOP_DATABASE_URL": "sqlite:////tmp/x.db",
           "REFLOOP_HL7__PORT": "3000", "REFLOOP_SMART__CLIENT_ID": "abc",
           "REFLOOP_TEST_POSTGRES_URL": "ignored", "OTHER": "x"}
    settings = load_settings(write(tmp_path, TOML), environ=env)
    assert settings.http_port == 9100 and settings.database_url == "sqlite:////tmp/x.db"
    assert settings.section("hl7") == {"port": "3000", "senders": ["EPIC", "CERNER"]}
    assert settings.section("smart") == {"client_id": "abc"}


def test_refloop_config_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "http_port = 7000\n")
    assert load_settings(environ={"REFLOOP_CONFIG": str(path)}).http_port == 7000


@pytest.mark.parametrize(("text", "env", "message"), [
    ("colour = 'red'\n", {}, "unknown setting 'colour'"),
    ("http_port = [\n", {}, "not valid TOML"),
    ("http_port = 'eighty'\n", {}, "refloop.toml: http_port: 'eighty' is not a valid whole number"),
    ("http_port = 80.5\n", {}, "not a valid whole number"),
    ("", {"REFLOOP_HTTP_PORT": "x"}, "environment variable REFLOOP_HTTP_PORT"),
    ("", {"REFLOOP_LEASE_SECONDS": "soon"}, "REFLOOP_LEASE_SECONDS: 'soon' is not a valid number"),
    ("http_port = 70000\n", {}, "not a TCP port"),
    ("log_level = 'LOUD'\n", {}, "use one of DEBUG"),
    ("log_format = 'xml'\n", {}, "use json or text"),
    ("sqlite_synchronous = 'sometimes'\n", {}, "use one of OFF"),
    ("", {"REFLOOP_DATABASE_URL": "mysql://x"}, "use sqlite:///"),
    ("worker_batch = -1\n", {}, "0 (each work kind's own batch size) or more"),
    ("lease_seconds = 0\n", {}, "more than 0"),
    ("log_level = 5\n", {}, "not a valid text"),
    ("[[hl7]]\nport = 1\n", {"REFLOOP_HL7__PORT": "2"}, "array of tables"),
])
def test_clear_errors(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(write(tmp_path, text), environ=env)
    assert message in str(caught.value)


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist; create it or unset REFLOOP_CONFIG"):
        load_settings(environ={"REFLOOP_CONFIG": str(tmp_path / "nope.toml")})
