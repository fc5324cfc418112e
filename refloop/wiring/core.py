"""Wiring of the core: health checks and the FHIR Task facade (capability/)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from refloop.wiring import Timer

if TYPE_CHECKING:
    from flask import Flask

    from referrals.store.work import WorkItem
    from referrals.worker import Handler
    from refloop.services import Services


def routes(app: Flask, services: Services) -> None:
    from capability.facade import facade_blueprint

    app.register_blueprint(facade_blueprint(services.store, services.db))


def work_handlers(services: Services) -> dict[str, Handler]:
    def reap(_item: WorkItem) -> None:
        services.work.reap()

    return {"core.reap": reap}


def timers(services: Services) -> list[Timer]:
    return [Timer("reap-expired-work", 60.0, "core.reap")]
