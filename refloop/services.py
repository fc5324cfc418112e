"""The services of one process: the core (refloop/core_services.py) plus every adapter's objects,
added by the wiring modules."""

from __future__ import annotations

from refloop.core_services import Services, build_core
from refloop.settings import Settings
from refloop.wiring import build_all

__all__ = ["Services", "build_services"]


def build_services(settings: Settings, *, wire: bool = True) -> Services:
    """Open the store and build the core; with `wire`, let each adapter add its objects."""
    services = build_core(settings)
    if wire:
        build_all(services)
    return services
