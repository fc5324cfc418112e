"""The core services the adapter uses, handed in by refloop/wiring/loop.py (adapters never import
each other: what another adapter offers arrives here as a plain callable)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from referrals.model import Actor
from referrals.service import ReferralService
from referrals.store.database import Database
from referrals.store.quarantine import Quarantine
from referrals.store.referrals import ReferralStore
from referrals.store.resources import ResourceStore
from referrals.store.tasks import CoordinatorTasks
from referrals.store.work import WorkQueue

#: who the loop's own events name
LOOP = Actor("Device/refloop-loop", "Refloop closed loop", "system")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Core:
    db: Database
    store: ReferralStore
    referrals: ReferralService
    resources: ResourceStore
    work: WorkQueue
    tasks: CoordinatorTasks
    #: our public URL (the secure links start with it)
    base_url: str
    #: where refused input is kept (an upload that is not a PDF)
    quarantine: Quarantine | None = None
    #: the subscriptions adapter's open_hook/attach, when that adapter is wired
    hooks: Any = None
    #: a FHIR server's Authorization header maker (SMART Backend Services), when configured
    authorizer_for: Callable[[str], Any] = field(default=lambda _base: None)
    #: the stages the v2 bridge itself reports to a partner about the partner's own referrals
    v2_stage_events: Callable[[str], frozenset[str]] = field(
        default=lambda _partner: frozenset())
    clock: Callable[[], datetime] = utc_now

    def now(self) -> datetime:
        return self.clock()
