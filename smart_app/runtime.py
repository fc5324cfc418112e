"""What the SMART app's routes need, handed in by refloop/wiring/smart.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from referrals.service import ReferralService
from referrals.store.database import Database
from referrals.store.referrals import ReferralStore
from referrals.store.resources import ResourceStore
from referrals.store.work import WorkQueue
from smart_app.config import SmartConfig
from smart_app.launcher import Launcher
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
    #: configured public URL ("" = take it from each request)
    public_base_url: str = ""
    #: what other adapters know about a referral ({"label", "value", "kind"}), from wiring
    facts: Callable[[str], list[dict[str, str]]] = field(default=lambda _referral_id: [])
