"""What the outreach handlers share, handed in by refloop/wiring/outreach.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from outreach.channels.base import Channel
from outreach.config import OutreachConfig
from outreach.store import OutreachStore
from referrals.service import ReferralService
from referrals.store.database import Database
from referrals.store.inbox import Inbox
from referrals.store.referrals import ReferralStore
from referrals.store.resources import ResourceStore
from referrals.store.tasks import CoordinatorTasks
from referrals.store.work import WorkQueue

ReplyHook = Callable[[dict[str, Any]], bool]
BookingLinks = Callable[[str], "str | None"]
#: whether a referral waits for prior authorization (the PAS adapter, through wiring): plain
#: data {"requirement": required|not-required|unknown, "waiting": bool, "pending": bool}
AuthorizationGate = Callable[[str], dict[str, Any]]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    config: OutreachConfig
    db: Database
    store: ReferralStore
    referrals: ReferralService
    resources: ResourceStore
    work: WorkQueue
    inbox: Inbox
    tasks: CoordinatorTasks
    ostore: OutreachStore
    channels: dict[str, Channel] = field(default_factory=dict)
    #: offered every patient reply outreach did not consume itself (opt-out, help): a hook
    #: returns True when it handled the reply (cross-adapter contract 3)
    reply_hooks: list[ReplyHook] = field(default_factory=list)
    #: the patient's self-scheduling link, when that capability is wired (contract 2)
    issue_booking_link: BookingLinks | None = None
    #: a ladder starting at `accept` waits for `authorize` when authorization is required,
    #: and one starting at `authorize` starts at `accept` when it is not (wired when PAS is)
    authorization_gate: AuthorizationGate | None = None
    clock: Callable[[], datetime] = utc_now
    secret: bytes = b""

    def now(self) -> datetime:
        return self.clock()

    @property
    def base_url(self) -> str:
        return self.config.public_base_url
