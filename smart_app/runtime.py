"""What the SMART app's routes need, handed in by refloop/wiring/smart.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from referrals.service import ReferralService
from referrals.store.database import Database
from referrals.store.referrals import ReferralStore
from referrals.store.resources import ResourceStore
from referrals.store.tasks import CoordinatorTasks
from referrals.store.work import WorkQueue
from smart_app.config import SmartConfig
from smart_app.launcher import Launcher
from smart_app.reads import RemoteRead
from smart_app.sessions import SessionStore


@dataclass
class SmartRuntime:
    config: SmartConfig
    launcher: Launcher
    sessions: SessionStore
    db: Database
    store: ReferralStore
    referrals: ReferralService
    resources: ResourceStore
    work: WorkQueue
    #: a handler for "pas.submit" is registered (the PAS client exists)
    pas_enabled: bool
    #: our public URL (settings.base_url): the only source of absolute URLs, never the Host
    public_base_url: str = ""
    #: coordinator tasks (listed on the worklist and the referral page, outcomes recorded here)
    tasks: CoordinatorTasks | None = None
    #: the scheduling sections (smart_app/scheduling_port.py), connected by refloop/wiring when
    #: the scheduling adapter is wired; None hides them
    scheduling: Any = None
    #: the outcomes dashboard (smart_app/analytics_port.py), connected by refloop/wiring when
    #: the analytics adapter is wired; None keeps the plain funnel
    analytics: Any = None
    #: what the adapters add about a referral (wiring `referral_details`): section name ->
    #: (JSON data, (table headers, table rows))
    details: Callable[[str], dict[str, Any]] = field(default=lambda _referral_id: {})
    #: reads a resource from a FHIR server the app has no launch token for, with Refloop's own
    #: client for it (SMART Backend Services where configured); see smart_app/reads.py
    read_remote: RemoteRead | None = None
