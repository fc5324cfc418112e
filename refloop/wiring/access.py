"""Wiring of access/: the authorization server, the guard every protected route uses, the
token sweep, and `refloop clients ...`.

Other wiring modules protect their routes with the guard, never with code of their own:

    from refloop.wiring.access import guard
    def routes(app, services):
        bp = metrics_blueprint(...)
        guard(services).protect(bp, "metrics:read")   # or @guard(services).require(...)
        app.register_blueprint(bp)
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from refloop.context import Context, pass_context
from refloop.wiring import Timer

log = logging.getLogger("refloop.access")

if TYPE_CHECKING:
    from flask import Flask

    from access.clients import ClientRegistry
    from access.config import AccessConfig
    from access.guard import Guard
    from access.keys import KeyCache
    from access.tokens import TokenStore
    from referrals.store.work import WorkItem
    from referrals.worker import Handler
    from refloop.core_services import Services


@dataclass
class Access:
    config: AccessConfig
    clients: ClientRegistry
    tokens: TokenStore
    keys: KeyCache
    guard: Guard


def build(services: Services) -> None:
    services.adapters["access"] = _access(services)


def guard(services: Services) -> Guard:
    """The guard for protecting routes (see the module docstring)."""
    return access_of(services).guard


def access_of(services: Services) -> Access:
    found = services.adapters.get("access")
    if found is None:
        found = services.adapters["access"] = _access(services)
    return found


def routes(app: Flask, services: Services) -> None:
    from access.discovery import TOKEN_PATH, supported_scopes
    from access.server import build_server
    from access.web import access_blueprint, token_error_page
    from refloop import error_pages

    access = access_of(services)
    base = services.settings.base_url
    server = build_server(access.clients, access.tokens, access.keys,
                          token_url=lambda: base + TOKEN_PATH,
                          lifetime=access.config.token_lifetime_seconds)
    app.register_blueprint(access_blueprint(
        server, base, lambda: supported_scopes(access.guard.fhir_interactions)))
    error_pages.register(app, TOKEN_PATH, token_error_page)
    warn_unmatched_tenants(services, access.config)


def warn_unmatched_tenants(services: Services, config: AccessConfig) -> None:
    """At start-up, a warning for each tenant none of whose sources any referral came from: its
    launches and tokens see nothing (a source misspelt, or no referral from it yet). One index
    probe per source."""
    for tenant in config.tenants:
        try:
            missing = services.store.unmatched_sources(tenant.sources)
        except Exception:  # no schema yet ('refloop db upgrade' pending): nothing to compare
            log.debug("tenant sources not checked", exc_info=True)
            return
        if tenant.sources and len(missing) == len(tenant.sources):
            log.warning(f"[[access.tenants]] {tenant.name}: no referral comes from its sources "
                        f"({', '.join(map(repr, tenant.sources))}), so its launches and tokens "
                        "see none. "
                        "Compare its sources with the source keys 'refloop referrals list "
                        "--json' shows (until its first referral arrives, this is expected)")


def work_handlers(services: Services) -> dict[str, Handler]:
    def sweep(_item: WorkItem) -> None:
        access_of(services).tokens.sweep()

    return {"access.sweep": sweep}


def timers(services: Services) -> list[Timer]:
    return [Timer("access-token-sweep", 300.0, "access.sweep")]


def commands() -> list[click.Command]:
    return [clients]


def _access(services: Services) -> Access:
    from access.clients import ClientRegistry
    from access.config import from_section
    from access.external import ExternalTokens
    from access.guard import Guard
    from access.keys import KeyCache
    from access.tokens import TokenStore

    config = from_section(services.settings.section("access"))
    keys = KeyCache(timeout=config.http_timeout_seconds)
    tokens = TokenStore(services.db)
    external = ExternalTokens(config, keys, fhir_base=services.settings.base_url + "/fhir")
    return Access(config=config, clients=ClientRegistry(services.db), tokens=tokens, keys=keys,
                  guard=Guard(tokens, external, config))


# -- refloop clients ------------------------------------------------------------------------

@click.group()
def clients() -> None:
    """API clients allowed to read the FHIR facade (SMART Backend Services)."""


@clients.command("add")
@click.option("--name", required=True, help="A name people recognise (unique).")
@click.option("--jwks-url", help="Where the client publishes its public keys (https).")
@click.option("--jwks-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A JSON file with the client's public JWK Set (when it has no URL).")
@click.option("--scope", "scopes", multiple=True, required=True,
              help="A scope the client may request, e.g. system/Task.rs (repeat the option).")
@click.option("--tenant", help="Limit the client to one [[access.tenants]] tenant's referrals.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_context
def clients_add(obj: Context, name: str, jwks_url: str | None, jwks_file: Path | None,
                scopes: tuple[str, ...], tenant: str | None, as_json: bool) -> None:
    """Register a client; prints its client_id and the token endpoint."""
    from access.discovery import TOKEN_PATH
    from refloop.output import print_json

    access = access_of(obj.services)
    if tenant and access.config.tenant(tenant) is None:
        raise click.BadParameter(f"no tenant {tenant!r} under [[access.tenants]]",
                                 param_hint="--tenant")
    jwks = None
    if jwks_file is not None:
        try:
            jwks = json.loads(jwks_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise click.BadParameter(f"{jwks_file}: not a JSON file ({exc})",
                                     param_hint="--jwks-file") from exc
    scope_list = [s for item in scopes for s in item.split()]
    client = access.clients.add(name=name, scopes=scope_list, jwks_url=jwks_url, jwks=jwks,
                                tenant=tenant)
    base = obj.settings.base_url
    info = {**client.to_dict(), "token_endpoint": base + TOKEN_PATH,
            "fhir_base": base + "/fhir"}
    if as_json:
        print_json(info)
        return
    click.echo(f"client_id:       {client.client_id}\n"
               f"token endpoint:  {info['token_endpoint']}\n"
               f"FHIR base:       {info['fhir_base']}\n"
               f"scopes:          {' '.join(client.scopes)}\n"
               "The client signs each token request with its private key (private_key_jwt, "
               "RS384 or ES384, kid from its JWK Set, aud = the token endpoint).")


@clients.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_context
def clients_list(obj: Context, as_json: bool) -> None:
    """Registered clients."""
    from refloop.output import print_json, print_table

    found = access_of(obj.services).clients.list()
    if as_json:
        print_json([c.to_dict() for c in found])
        return
    if not found:
        click.echo("no clients; add one with 'refloop clients add'")
        return
    print_table(["client_id", "name", "scopes", "keys", "tenant", "added"],
                [[c.client_id, c.name, " ".join(c.scopes), c.jwks_url or "(file)",
                  c.tenant or "", c.created_at.strftime("%Y-%m-%d %H:%M")] for c in found])


@clients.command("remove")
@click.argument("client")
@pass_context
def clients_remove(obj: Context, client: str) -> None:
    """Remove a client (by client_id or name); its tokens stop working at once."""
    registry = access_of(obj.services).clients
    found = registry.find(client)
    if found is None or not registry.remove(found.client_id):
        raise click.ClickException(f"no client {client!r}; 'refloop clients list' shows them")
    click.echo(f"removed {found.name} ({found.client_id}); its tokens are revoked")


@clients.command("token")
@click.option("--client-id", required=True)
@click.option("--key", "key_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The client's private key (PEM) or private JWK (JSON).")
@click.option("--kid", default="", help="The key's kid (default: the JWK's kid).")
@click.option("--scope", "scopes", multiple=True,
              help="A scope to ask for (repeat the option, or give several separated by "
                   "spaces). Default: every scope the client registered here ('refloop clients "
                   "list' shows them); required for a client of another server's token "
                   "endpoint (--token-url).")
@click.option("--token-url", default="", help="Default: this server's token endpoint.")
@pass_context
def clients_token(obj: Context, client_id: str, key_file: Path, kid: str,
                  scopes: tuple[str, ...], token_url: str) -> None:
    """Get an access token as a client would (for trying the API from a shell): prints it.

    Without --scope it asks for every scope the client registered, as `refloop clients add
    --scope` gave them."""
    from access.client import request_token
    from access.discovery import TOKEN_PATH

    url = token_url or obj.settings.base_url + TOKEN_PATH
    scope = " ".join(s for item in scopes for s in item.split()) or \
        _registered_scopes(obj, client_id)
    started = time.monotonic()
    token = request_token(url, client_id=client_id, key_file=key_file, kid=kid, scope=scope)
    click.echo(token["access_token"])
    click.echo(f"(expires in {token.get('expires_in')} s; scopes {token.get('scope')}; "
               f"{(time.monotonic() - started) * 1000:.0f} ms)", err=True)


def _registered_scopes(obj: Context, client_id: str) -> str:
    """The scopes `client_id` registered in this server's database, or a usage error that says
    how to name them."""
    found = access_of(obj.services).clients.get(client_id)
    if found is None:
        raise click.UsageError(f"no client {client_id!r} is registered here, so its scopes are "
                               "not known: pass them with --scope (e.g. --scope system/Task.rs)")
    return " ".join(found.scopes)


DEMO_CLIENT = "demo-reader"


def ensure_demo_client(services: Services) -> tuple[str, Path]:
    """The demo's API client (system/Task.rs) and its private key (a JWK file, mode 0600 under
    var/), made on first use."""
    from joserfc.jwk import ECKey

    from refloop.files import write_private

    path = services.settings.var_dir / "demo-client.jwk"
    registry = access_of(services).clients
    found = registry.find(DEMO_CLIENT)
    if found is not None and path.exists():
        return found.client_id, path
    if found is not None:
        registry.remove(found.client_id)
    key = ECKey.generate_key("P-384", parameters={"kid": "demo-1"}, private=True)
    write_private(path, json.dumps(key.as_dict(private=True)).encode(), replace=True)
    client = registry.add(name=DEMO_CLIENT, scopes=["system/Task.rs"],
                          jwks={"keys": [key.as_dict(private=False)]})
    return client.client_id, path
