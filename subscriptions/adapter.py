"""The subscriptions adapter object (services.adapters["subscriptions"]): registration,
reconciliation, hooks for other consumers, clients per FHIR server, the JWKS."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from referrals.errors import PeerError
from referrals.service import ReferralService
from referrals.store.cursors import Cursors
from referrals.store.database import Database
from referrals.store.inbox import Inbox
from referrals.store.referrals import ReferralStore
from referrals.store.resources import ResourceStore
from referrals.store.work import WorkItem, WorkQueue
from subscriptions.auth import BackendServicesAuth, SigningKey, build_jwks, discover_token_url
from subscriptions.client import FhirClient
from subscriptions.config import ConfigError, FhirServer, SubscriptionsConfig, check, server_for
from subscriptions.discovery import POLLING, choose_flavour, read_facts
from subscriptions.endpoint import HookEndpoint
from subscriptions.intake import Intake
from subscriptions.processing import NotificationHandler, detection_params, schedule_reconcile
from subscriptions.rate import RateLimiter
from subscriptions.reconcile import PageDone, Reconciler, ReconcileResult
from subscriptions.recovery import TOPIC_FLAVOURS, Recovery
from subscriptions.registration import Outcome, Registrar
from subscriptions.registry import REFERRALS, Hook, Registration, Registry

log = logging.getLogger("refloop.subscriptions")


@dataclass
class Core:
    """The core services the adapter uses (passed in by refloop/wiring)."""

    db: Database
    store: ReferralStore
    referrals: ReferralService
    resources: ResourceStore
    inbox: Inbox
    work: WorkQueue
    cursors: Cursors
    base_url: str


@dataclass
class SubscriptionsAdapter:
    core: Core
    servers: list[FhirServer]
    config: SubscriptionsConfig = field(default_factory=SubscriptionsConfig)

    def __post_init__(self) -> None:
        core = self.core
        self.registry = Registry(core.db, core.base_url, self.config.hook_cache_seconds)
        self.intake = Intake(core.db, core.store, core.referrals, core.resources)
        self.reconciler = Reconciler(core.cursors, self.intake)
        self.registrar = Registrar(self.registry, core.base_url)
        self.endpoint = HookEndpoint(self.registry, core.inbox, core.db,
                                     self.config.max_body_bytes, self.config.max_json_depth,
                                     RateLimiter(self.config.rate_limit, self.config.rate_burst))
        self.notifications = NotificationHandler(core.inbox, core.work, self.registry,
                                                 self.intake, self.client_for,
                                                 self.config.gap_grace_seconds,
                                                 categories_for=self.categories_for)
        self.recovery = Recovery(self.registry, self.intake, core.work, self.client_for,
                                 self.detection_params, self._schedule_reconcile)
        self._clients: dict[str, FhirClient] = {}
        self._lock = threading.Lock()
        self._last_poll: dict[str, float] = {}

    # -- hooks for other consumers (the PAS engineer's payer notifications) --

    def open_hook(self, *, server: str, purpose: str, deliver_kind: str) -> Hook:
        """A new endpoint + secret; put `hook.url` and `hook.header` in the Subscription."""
        return self.registry.open_hook(server=server, purpose=purpose,
                                       deliver_kind=deliver_kind, flavour="external")

    def attach(self, hook_id: str, subscription_id: str) -> None:
        """Record the server-side Subscription id of a hook."""
        self.registry.attach(hook_id, subscription_id, status="requested")

    # -- servers and clients --

    def server(self, base_url: str, auth: str | None = None) -> FhirServer:
        return server_for(self.servers, base_url, auth)

    def known_servers(self) -> list[FhirServer]:
        bases = {s.base: s for s in self.servers}
        for base in self.registry.servers():
            bases.setdefault(base, self.server(base))
        return list(bases.values())

    def client_for(self, base_url: str, server: FhirServer | None = None) -> FhirClient:
        chosen = server or self.server(base_url)
        with self._lock:
            key = f"{chosen.base}|{chosen.auth}"
            if key not in self._clients:
                self._clients[key] = FhirClient(chosen.base, timeout=chosen.timeout,
                                                retries=chosen.retries,
                                                authorize=self._authorizer(chosen))
            return self._clients[key]

    def _authorizer(self, server: FhirServer) -> BackendServicesAuth | None:
        if server.auth != "backend-services":
            return None
        token_url = server.token_url or discover_token_url(server.base, server.timeout)
        return BackendServicesAuth(SigningKey.from_file(server.key_file, server.key_id,
                                                        server.alg),
                                   server.client_id, server.scope, token_url,
                                   timeout=server.timeout, retries=server.retries)

    def jwks(self) -> dict[str, Any]:
        """Our public keys: one per configured key_file."""
        keys = [SigningKey.from_file(s.key_file, s.key_id, s.alg) for s in self.servers
                if s.key_file]
        return build_jwks(keys)

    # -- registration, reconciliation --

    def register(self, base_url: str, auth: str | None = None, *,
                 criteria: str | None = None, categories: Sequence[str] | None = None
                 ) -> Outcome:
        """Register on a server; `criteria`/`categories` override its configuration for this
        registration (reconciliation then follows what was registered)."""
        server = self.server(base_url, auth)
        if criteria is not None or categories is not None:
            server = check(replace(server, criteria=criteria or server.criteria,
                                   categories=tuple(server.categories if categories is None
                                                    else categories)), server.base)
        client = self.client_for(server.base, server)
        facts = read_facts(client)
        choice = choose_flavour(facts, server.flavour, server.topic,
                                filters=[n.split(":")[0] for n, _ in server.criteria_params])
        outcome = self.registrar.register(server, client, choice)
        if outcome.flavour == POLLING or outcome.status != "active":
            self.reconcile(server.base)
        return outcome

    def reconcile(self, base_url: str, on_page: PageDone | None = None) -> ReconcileResult:
        """Catch up by _lastUpdated, then re-activate our Subscriptions in error or off."""
        server = self.registered(self.server(base_url))
        client = self.client_for(server.base, server)
        result = self.reconciler.run(server, client, on_page)
        self._last_poll[server.base] = time.monotonic()
        for row in self.registry.rows(server=server.base, purpose=REFERRALS):
            if row.subscription_id and row.flavour != POLLING and \
                    row.status not in ("missing", "replaced"):
                try:
                    self.registrar.reactivate(client, row.hook_id, row.subscription_id)
                except PeerError as exc:
                    self.registry.record_error(row.hook_id, str(exc))
        return result

    def registered(self, server: FhirServer) -> FhirServer:
        """The server with the criteria of our newest live registration on it (what `register`
        reported), if any. A registration made before categories existed gets the configured
        categories added."""
        live = [r for r in self.registry.rows(server=server.base, purpose=REFERRALS)
                if r.criteria and r.status not in ("missing", "replaced")]
        return replace(server, criteria=live[-1].criteria) if live else server

    def categories_for(self, base_url: str) -> tuple[str, ...]:
        return self.server(base_url).categories

    def detection_params(self, base_url: str, criteria: str) -> list[tuple[str, str]]:
        return detection_params(criteria, self.categories_for(base_url))

    def _schedule_reconcile(self, server: str, why: str) -> None:
        schedule_reconcile(self.core.work, server, why)

    def check_silent(self, server: FhirServer) -> None:
        """Topic-based registrations silent for two heartbeat periods: ask `$status`."""
        if server.heartbeat_seconds <= 0:
            return
        quiet = datetime.now(UTC) - timedelta(seconds=2 * server.heartbeat_seconds)
        for row in self.registry.rows(server=server.base, purpose=REFERRALS):
            if row.flavour in TOPIC_FLAVOURS and row.subscription_id and \
                    row.status not in ("missing", "replaced") and \
                    (row.last_notification_at or row.created_at) < quiet:
                self.recovery.check_status(row)

    def reconcile_due(self, *, every: bool = False) -> int:
        """Every server whose poll interval has passed (the periodic timer), or every server
        (`every`: the start-up catch-up)."""
        done = 0
        for server in self.known_servers():
            last = self._last_poll.get(server.base)
            if not every and last is not None and \
                    time.monotonic() - last < server.poll_interval:
                continue
            try:
                self.reconcile(server.base)
                self.check_silent(server)
                done += 1
            except PeerError as exc:
                log.warning("reconcile failed", extra={"server": server.base,
                                                       "error": str(exc)})
                for row in self.registry.rows(server=server.base, purpose=REFERRALS):
                    self.registry.record_error(row.hook_id, f"reconcile: {exc}")
        return done

    def registrations(self) -> list[Registration]:
        return self.registry.rows()

    def rotate_secret(self, hook_id: str) -> Hook:
        """A new secret for one of our registrations, set in its Subscription on the server;
        the previous one is accepted for `rotate_grace_seconds`. The returned Hook carries the
        new secret (shown once; only its hash is stored)."""
        try:
            row = self.registry.get(hook_id)
        except KeyError as exc:
            raise ConfigError(f"no hook {hook_id!r}; 'refloop subscriptions list --json' shows "
                              "the hook ids") from exc
        if row.purpose != REFERRALS:
            raise ConfigError(f"hook {hook_id[:6]} belongs to {row.purpose!r}, whose "
                              "Subscription Refloop does not manage; rotate it there")
        client = self.client_for(row.server)
        return self.registrar.rotate_secret(client, hook_id, self.config.rotate_grace_seconds)

    # -- work handlers --

    def handle_notification(self, item: WorkItem) -> None:
        self.notifications(item)

    def handle_reconcile(self, item: WorkItem) -> None:
        self.reconcile(str(item.payload["server"]))

    def handle_events(self, item: WorkItem) -> None:
        self.recovery.handle_events(item)

    def handle_reconcile_due(self, item: WorkItem) -> None:
        self.reconcile_due(every=bool(item.payload.get("start")))
