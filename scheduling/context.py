"""The core services the adapter uses, handed in by refloop/wiring/scheduling.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from referrals.service import ReferralService
from referrals.store.cursors import Cursors
from referrals.store.database import Database
from referrals.store.referrals import ReferralStore
from referrals.store.resources import ResourceStore
from referrals.store.work import WorkQueue


@dataclass
class Core:
    db: Database
    store: ReferralStore
    referrals: ReferralService
    resources: ResourceStore
    work: WorkQueue
    cursors: Cursors
    #: our public URL (the patient links start with it)
    base_url: str
    #: the core's coordinator tasks (services.tasks) when this build has them
    tasks: Any = None
    #: the subscriptions adapter's open_hook/attach, when that adapter is wired
    hooks: Any = None
    #: our organisation's calendar address for .ics ORGANIZER
    organizer: str = "mailto:scheduling@refloop.invalid"
