"""How many items of a kind a worker claims per round: the operator's worker_batch when set,
else the size the kind's handler declares, else the default."""

from __future__ import annotations

from referrals.store.work import WorkItem
from referrals.worker import DEFAULT_BATCH, batch_size
from subscriptions.processing import NotificationHandler


def plain(item: WorkItem) -> None:
    del item


class Bulky:
    batch_size = 100

    def __call__(self, item: WorkItem) -> None:
        del item


def test_the_handler_declares_its_size_and_the_operator_overrides_it() -> None:
    assert batch_size(plain) == DEFAULT_BATCH == 10
    assert batch_size(Bulky()) == 100
    assert batch_size(Bulky(), override=5) == 5      # worker_batch wins, smaller...
    assert batch_size(plain, override=50) == 50      # ...or larger
    assert batch_size(Bulky(), override=0) == 100    # 0: not set


def test_referral_notifications_are_claimed_a_hundred_at_a_time() -> None:
    assert NotificationHandler.batch_size == 100
