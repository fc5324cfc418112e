"""Wiring: each adapter's module here builds its objects and names its routes, work handlers,
timers, CLI commands and process roles. `refloop/` is the only place that does this (DESIGN.md
rule 3); adapters never import each other.

A wiring module may define any of:
    build(services) -> None                      objects into services.adapters, listeners
    routes(app, services) -> None                Flask blueprints
    work_handlers(services) -> dict[str, Handler]
    timers(services) -> list[Timer]              periodic work, enqueued by the scheduler
    commands() -> list[click.Command]            `refloop ...` sub-commands
    roles(services) -> dict[str, Role]           long-running roles (`--role mllp`)
    referral_details(services, referral_id) -> dict[str, (json, (headers, rows))]
                                                 sections of `refloop referrals show`
    serving(settings) -> None                    before `refloop serve` runs its roles (in
                                                 the process that starts them)
    work_observer(services) -> Observer          told of each work item a worker handled
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import click
    from flask import Flask

    from referrals.worker import Handler, Observer
    from refloop.core_services import Services
    from refloop.settings import Settings

MODULES = ("core", "access", "subscriptions", "hl7", "pas", "smart", "outreach", "scheduling",
           "loop", "analytics")

Role = Callable[[threading.Event], None]


@dataclass(frozen=True)
class Timer:
    """Periodic work: every `every_seconds`, one work item of `kind` across all nodes.

    `at_start`: also one item each time a worker process starts, with a key of its own (never
    de-duplicated against the period's item) and `"start": true` in its payload.
    """

    name: str
    every_seconds: float
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
    at_start: bool = False


def modules() -> list[ModuleType]:
    return [importlib.import_module(f"refloop.wiring.{name}") for name in MODULES]


def build_all(services: Services) -> None:
    for module in modules():
        if hasattr(module, "build"):
            module.build(services)


def install_routes(app: Flask, services: Services) -> None:
    for module in modules():
        if hasattr(module, "routes"):
            module.routes(app, services)


def all_handlers(services: Services) -> dict[str, Handler]:
    handlers: dict[str, Handler] = {}
    for module in modules():
        if hasattr(module, "work_handlers"):
            handlers.update(module.work_handlers(services))
    return handlers


def all_timers(services: Services) -> list[Timer]:
    timers: list[Timer] = []
    for module in modules():
        if hasattr(module, "timers"):
            timers.extend(module.timers(services))
    return timers


def all_commands() -> list[click.Command]:
    commands: list[click.Command] = []
    for module in modules():
        if hasattr(module, "commands"):
            commands.extend(module.commands())
    return commands


def all_roles(services: Services) -> dict[str, Role]:
    roles: dict[str, Role] = {}
    for module in modules():
        if hasattr(module, "roles"):
            roles.update(module.roles(services))
    return roles


def all_referral_details(services: Services, referral_id: str) -> dict[str, Any]:
    details: dict[str, Any] = {}
    for module in modules():
        if hasattr(module, "referral_details"):
            details.update(module.referral_details(services, referral_id))
    return details


def prepare_serving(settings: Settings) -> None:
    for module in modules():
        if hasattr(module, "serving"):
            module.serving(settings)


def work_observer(services: Services) -> Observer | None:
    """Every module's work observer, called in turn (None when there is none)."""
    observers = [module.work_observer(services) for module in modules()
                 if hasattr(module, "work_observer")]
    if not observers:
        return None

    def observe(kind: str, outcome: str, seconds: float) -> None:
        for observer in observers:
            observer(kind, outcome, seconds)

    return observe
