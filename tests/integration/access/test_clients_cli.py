"""`refloop clients add|list|remove|token` against a server on 127.0.0.1, and the demo's client:
a registered client gets a token from the command line and reads the facade with it."""

from __future__ import annotations

import json
import logging
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result
from joserfc.jwk import ECKey, RSAKey
from werkzeug.serving import make_server

from refloop.app import create_app
from refloop.cli import main
from refloop.services import build_services
from refloop.settings import Settings
from refloop.wiring.access import ensure_demo_client


@pytest.fixture(autouse=True)
def keep_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A server on a free loopback port, and the CLI environment that names it."""
    listener = make_server("127.0.0.1", 0, lambda e, s: app(e, s), threaded=True)
    port = listener.server_port
    settings = Settings(var_dir=tmp_path / "var", database_url=database_url, http_port=port)
    services = build_services(settings)
    app = create_app(services)
    thread = threading.Thread(target=listener.serve_forever, daemon=True)
    thread.start()
    env = {"REFLOOP_CONFIG": "", "REFLOOP_DATABASE_URL": database_url,
           "REFLOOP_VAR_DIR": str(tmp_path / "var"), "REFLOOP_HTTP_PORT": str(port),
           "REFLOOP_LOG_LEVEL": "WARNING"}
    yield f"http://127.0.0.1:{port}", env
    listener.shutdown()
    services.close()


def run(args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def test_add_token_read_list_remove(server: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    base, env = server
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    private = tmp_path / "client.pem"
    private.write_bytes(key.as_pem(private=True))
    added = run(["clients", "add", "--name", "registry", "--jwks-file", str(jwks),
                 "--scope", "system/Task.rs", "--json"], env)
    assert added.exit_code == 0, added.output + added.stderr
    info = json.loads(added.output)
    assert info["token_endpoint"] == f"{base}/auth/token" and info["jwks_kids"] == ["k1"]
    token = run(["clients", "token", "--client-id", info["client_id"], "--key", str(private),
                 "--kid", "k1"], env)
    assert token.exit_code == 0, token.output + token.stderr
    headers = {"Authorization": f"Bearer {token.stdout.strip()}"}
    assert requests.get(f"{base}/fhir/Task", headers=headers, timeout=10).status_code == 200
    listed = json.loads(run(["clients", "list", "--json"], env).output)
    assert [c["name"] for c in listed] == ["registry"]
    assert "registry" in run(["clients", "list"], env).output
    again = run(["clients", "add", "--name", "registry", "--jwks-file", str(jwks),
                 "--scope", "system/Task.rs"], env)
    assert again.exit_code == 1 and "exists" in again.stderr
    removed = run(["clients", "remove", "registry"], env)
    assert removed.exit_code == 0 and "revoked" in removed.output
    assert requests.get(f"{base}/fhir/Task", headers=headers, timeout=10).status_code == 401
    assert run(["clients", "remove", "registry"], env).exit_code == 1


@pytest.mark.parametrize(("args", "message"), [
    (["--scope", "system/Task.rs"], "exactly one of --jwks-url"),
    (["--scope", "user/Task.rs", "--jwks-url", "https://client.example/jwks"], "system/ scopes"),
    (["--scope", "system/Task.sr", "--jwks-url", "https://client.example/jwks"], "order"),
    (["--scope", "system/Task.rs", "--jwks-url", "http://client.example/jwks"], "https"),
    (["--scope", "system/Task.rs", "--jwks-url", "https://x.example/j", "--tenant", "nope"],
     "no tenant"),
    (["--scope", "system/Task.rs", "--jwks-file", "PRIVATE"], "private key material"),
    (["--scope", "system/Task.rs", "--jwks-file", "NOKID"], "no kid"),
    (["--scope", "system/Task.rs", "--jwks-file", "P256"], "P-384"),
])
def test_add_explains_what_is_wrong(server: tuple[str, dict[str, str]], tmp_path: Path,
                                    args: list[str], message: str) -> None:
    _base, env = server
    key = ECKey.generate_key("P-384", private=True)
    files = {"PRIVATE": {"keys": [{**key.as_dict(private=True), "kid": "a"}]},
             "NOKID": {"keys": [key.as_dict(private=False)]},
             "P256": {"keys": [ECKey.generate_key("P-256", parameters={"kid": "a"})
                               .as_dict(private=False)]}}
    for name, body in files.items():
        (tmp_path / name).write_text(json.dumps(body))
    args = [str(tmp_path / a) if a in files else a for a in args]
    result = run(["clients", "add", "--name", "x", *args], env)
    assert result.exit_code != 0
    assert message in result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert json.loads(run(["clients", "list", "--json"], env).output) == []


def test_the_demo_client_reads_with_a_token(server: tuple[str, dict[str, str]],
                                            tmp_path: Path, database_url: str) -> None:
    base, env = server
    services = build_services(Settings(var_dir=tmp_path / "var", database_url=database_url))
    try:
        client_id, key = ensure_demo_client(services)
        assert ensure_demo_client(services) == (client_id, key)  # made once
    finally:
        services.close()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    token = run(["clients", "token", "--client-id", client_id, "--key", str(key)], env)
    assert token.exit_code == 0, token.stderr
    answer: Any = requests.get(f"{base}/fhir/Task?_count=5", timeout=10, headers={
        "Authorization": f"Bearer {token.stdout.strip()}"})
    assert answer.status_code == 200 and answer.json()["resourceType"] == "Bundle"


def test_token_asks_for_the_registered_scopes(server: tuple[str, dict[str, str]],
                                              tmp_path: Path) -> None:
    """Without --scope the command asks for every scope the client registered (it asked for
    system/Task.rs alone); with --scope, for those; for a client not registered here it says
    to pass --scope."""
    _base, env = server
    key = ECKey.generate_key("P-384", parameters={"kid": "k1"}, private=True)
    jwks, private = tmp_path / "jwks.json", tmp_path / "client.jwk"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    private.write_text(json.dumps(key.as_dict(private=True)))
    added = run(["clients", "add", "--name", "reports", "--jwks-file", str(jwks), "--scope",
                 "system/Task.rs", "--scope", "metrics:read", "--json"], env)
    client_id = json.loads(added.output)["client_id"]
    every = run(["clients", "token", "--client-id", client_id, "--key", str(private)], env)
    assert every.exit_code == 0, every.stderr
    assert "scopes system/Task.rs metrics:read;" in every.stderr
    one = run(["clients", "token", "--client-id", client_id, "--key", str(private),
               "--scope", "metrics:read"], env)
    assert one.exit_code == 0 and "scopes metrics:read;" in one.stderr
    unknown = run(["clients", "token", "--client-id", "elsewhere", "--key", str(private)], env)
    assert unknown.exit_code == 2 and "pass them with --scope" in unknown.stderr
    assert "every scope the client registered" in run(["clients", "token", "--help"], env).output


def test_token_says_which_keys_sign(server: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    """An EC private key on another curve than P-384 cannot sign ES384: one clear line, not a
    traceback from the JOSE library."""
    _base, env = server
    private = tmp_path / "p256.jwk"
    private.write_text(json.dumps(ECKey.generate_key("P-256", parameters={"kid": "k"},
                                                     private=True).as_dict(private=True)))
    result = CliRunner().invoke(main, ["clients", "token", "--client-id", "c", "--key",
                                       str(private), "--scope", "system/Task.rs"], env=env)
    assert result.exit_code == 1 and result.exception is not None
    assert isinstance(result.exception, SystemExit), result.exception
    assert "P-384" in result.stderr and "RSA" in result.stderr
