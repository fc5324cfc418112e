"""The core's object graph: the store and the core services, built once per process.

The wiring modules import `Services` from here; `refloop.services.build_services` adds each
adapter's objects to it (so imports flow one way: services -> wiring -> core_services)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from referrals.service import ReferralService
from referrals.store import Database, connect
from referrals.store.cursors import Cursors
from referrals.store.inbox import Inbox
from referrals.store.quarantine import Quarantine
from referrals.store.referrals import ReferralStore
from referrals.store.resources import ResourceStore
from referrals.store.tasks import CoordinatorTasks
from referrals.store.work import WorkQueue
from refloop.files import ensure_private_dir
from refloop.settings import Settings


@dataclass
class Services:
    settings: Settings
    db: Database
    store: ReferralStore
    referrals: ReferralService
    resources: ResourceStore
    quarantine: Quarantine
    work: WorkQueue
    inbox: Inbox
    cursors: Cursors
    #: coordinator tasks (a person must act on a referral); see referrals/store/tasks.py
    tasks: CoordinatorTasks
    #: adapter objects built by the wiring modules, by name ("subscriptions", "hl7", ...)
    adapters: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        """Stop what the adapters started (their `close`), then close the store."""
        for adapter in self.adapters.values():
            closing = getattr(adapter, "close", None)
            if callable(closing):
                closing()
        self.db.dispose()


def build_core(settings: Settings) -> Services:
    """Open the store and build the core services (no adapter yet)."""
    if not settings.database_url:
        ensure_private_dir(settings.var_dir)
    db = connect(settings.database, sqlite_synchronous=settings.sqlite_synchronous)
    store = ReferralStore(db)
    quarantine = Quarantine(db)
    work = WorkQueue(db, quarantine, lease_seconds=settings.lease_seconds)
    services = Services(
        settings=settings, db=db, store=store, referrals=ReferralService(db, store),
        resources=ResourceStore(db), quarantine=quarantine, work=work,
        inbox=Inbox(db, work, quarantine), cursors=Cursors(db), tasks=CoordinatorTasks(db, work),
    )
    return services
