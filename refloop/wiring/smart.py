"""Wiring of the SMART app (smart_app/): its runtime, its blueprint, `refloop smart ...`."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click

from refloop.context import Context, pass_context
from refloop.wiring import Timer

if TYPE_CHECKING:
    from flask import Flask

    from referrals.store.work import WorkItem
    from referrals.worker import Handler
    from refloop.core_services import Services
    from refloop.settings import Settings
    from smart_app.config import SmartConfig
    from smart_app.reads import RemoteRead
    from smart_app.runtime import SmartRuntime


log = logging.getLogger("refloop.smart")


def build(services: Services) -> None:
    services.adapters["smart"] = _runtime(services)


def routes(app: Flask, services: Services) -> None:
    from refloop.wiring import all_handlers, all_referral_details
    from smart_app.config import unlimited_tenants_warning
    from smart_app.web import smart_blueprint

    runtime: SmartRuntime = services.adapters.get("smart") or _runtime(services)
    warning = unlimited_tenants_warning(runtime.config)
    if warning:
        log.warning(warning)
    runtime.pas_enabled = "pas.submit" in all_handlers(services)
    runtime.details = lambda referral_id: all_referral_details(services, referral_id)
    runtime.read_remote = remote_reader(services)
    app.register_blueprint(smart_blueprint(runtime))


def remote_reader(services: Services) -> RemoteRead:
    """Reads for the referral page from a FHIR server other than the launch's: the subscriptions
    adapter's client for that server (Backend Services where it is configured so), one attempt
    with a short timeout (a person is waiting), its token shared with the adapter's client."""
    from referrals.errors import PeerError
    from subscriptions.client import FhirClient

    clients: dict[str, FhirClient] = {}
    lock = threading.Lock()

    def read(server: str, reference: str) -> dict[str, Any] | None:
        subs = services.adapters.get("subscriptions")
        if subs is None:
            raise PeerError("Refloop has no FHIR client (the subscriptions adapter is off)")
        with lock:
            client = clients.get(server)
            if client is None:
                shared = subs.client_for(server)
                client = clients[server] = FhirClient(
                    shared.base, timeout=min(shared.timeout, 5.0), retries=1,
                    authorize=shared.authorize)
        reply = client.get(reference, ok=(200, 404, 410))
        return reply.body if reply.status == 200 and isinstance(reply.body, dict) else None

    return read


def work_handlers(services: Services) -> dict[str, Handler]:
    def sweep(_item: WorkItem) -> None:
        runtime: SmartRuntime = services.adapters.get("smart") or _runtime(services)
        runtime.sessions.sweep()

    return {"smart.sweep": sweep}


def timers(services: Services) -> list[Timer]:
    """Expired launch states and ended sessions go every five minutes."""
    return [Timer("smart-sweep", 300.0, "smart.sweep")]


def commands() -> list[click.Command]:
    return [smart]


def _runtime(services: Services) -> SmartRuntime:
    from smart_app.client import EhrHttp
    from smart_app.launcher import Launcher
    from smart_app.runtime import SmartRuntime
    from smart_app.sessions import SessionStore
    from smart_app.tokens import TokenVault

    settings = services.settings
    config = smart_config(settings)
    assert config.token_key_file is not None
    sessions = SessionStore(services.db, TokenVault.from_file(config.token_key_file),
                            idle=timedelta(minutes=config.session_idle_minutes),
                            absolute=timedelta(hours=config.session_absolute_hours),
                            states_per_source=config.launch_states_per_source,
                            states_max=config.launch_states_max)
    launcher = Launcher(config, sessions, EhrHttp(config.http_timeout_seconds))
    return SmartRuntime(config=config, launcher=launcher, sessions=sessions, db=services.db,
                        store=services.store, referrals=services.referrals,
                        resources=services.resources, work=services.work, pas_enabled=False,
                        public_base_url=settings.base_url,
                        tasks=services.tasks)


def smart_config(settings: Settings) -> SmartConfig:
    """The [smart] table, each tenant's access_tenant resolved to that [[access.tenants]]
    organisation's referral sources."""
    from access.config import from_section as access_section
    from smart_app.config import from_section, link_access_tenants

    organisations = access_section(settings.section("access")).tenants
    return link_access_tenants(from_section(settings.section("smart"), settings.var_dir),
                               {t.name: t.sources for t in organisations})


@click.group()
def smart() -> None:
    """The SMART on FHIR app for coordinators and clinicians."""


@smart.command("client-config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_context
def client_config(obj: Context, as_json: bool) -> None:
    """What to register in each EHR: launch URL, redirect URI, JWKS URL, scopes."""
    from refloop.output import print_json
    from smart_app.config import unlimited_tenants_warning

    settings = obj.settings
    config = smart_config(settings)
    base = settings.base_url
    info: dict[str, Any] = {
        "launch_url": f"{base}/smart/launch", "redirect_uri": f"{base}/smart/callback",
        "jwks_url": f"{base}/smart/jwks.json",
        "tenants": [{"name": t.name, "client_id": t.client_id, "iss": list(t.issuers),
                     "client_type": "confidential-asymmetric" if t.private_key_file
                     else "confidential-symmetric",
                     "token_endpoint_auth_method": "private_key_jwt" if t.private_key_file
                     else "client_secret_basic",
                     "kid": t.kid, "scopes": t.scopes, "ehr_origins": list(t.ehr_origins),
                     "access_tenant": t.access_tenant,
                     "sources": None if t.sources is None else list(t.sources)}
                    for t in config.tenants],
    }
    warning = unlimited_tenants_warning(config)
    if warning:
        click.echo(f"Warning: {warning}", err=True)
    if as_json:
        print_json(info)
        return
    click.echo(f"Launch URL:    {info['launch_url']}\nRedirect URI:  {info['redirect_uri']}\n"
               f"JWKS URL:      {info['jwks_url']}")
    if not base.startswith("https://"):
        click.echo("Note: EHRs require HTTPS on port 443; set public_base_url to the https "
                   "address users reach.", err=True)
    if not config.tenants:
        click.echo("No tenants yet: add [[smart.tenants]] to the configuration.")
    for tenant in info["tenants"]:
        click.echo(f"\nTenant {tenant['name']}: client_id {tenant['client_id']}, "
                   f"{tenant['client_type']} ({tenant['token_endpoint_auth_method']}"
                   f"{', kid ' + tenant['kid'] if tenant['kid'] else ''})\n"
                   f"  iss allowed: {', '.join(tenant['iss'])}\n"
                   f"  frame-ancestors: {', '.join(tenant['ehr_origins'])}\n"
                   f"  scopes: {tenant['scopes']}\n"
                   f"  referrals shown: {_shown(tenant)}")


def _shown(tenant: dict[str, Any]) -> str:
    if tenant["sources"] is None:
        return "every referral (no access_tenant)"
    return f"access tenant {tenant['access_tenant']}: {', '.join(tenant['sources'])}"
