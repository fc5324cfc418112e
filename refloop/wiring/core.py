"""Wiring of the core: the FHIR Task facade (capability/), behind the access guard."""

from __future__ import annotations

from typing import TYPE_CHECKING

from refloop.wiring import Timer

if TYPE_CHECKING:
    from flask import Flask

    from referrals.store.work import WorkItem
    from referrals.worker import Handler
    from refloop.core_services import Services


def routes(app: Flask, services: Services) -> None:
    from access.discovery import capability_security
    from capability.facade import facade_blueprint
    from refloop.wiring.access import guard

    base = services.settings.base_url
    app.register_blueprint(facade_blueprint(
        services.db, services.resources, access=guard(services), base_url=base,
        security=capability_security(base)))


def work_handlers(services: Services) -> dict[str, Handler]:
    def reap(_item: WorkItem) -> None:
        services.work.reap()

    return {"core.reap": reap}


def timers(services: Services) -> list[Timer]:
    return [Timer("reap-expired-work", 60.0, "core.reap")]
