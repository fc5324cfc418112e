"""Whether an incoming resource is a new version of the one we hold: the rule `put`, `put_over`
and `put_later` share."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol


class Held(Protocol):
    """The version we hold (a `CurrentVersion`)."""

    @property
    def remote_version(self) -> str | None: ...

    @property
    def deleted(self) -> bool: ...

    @property
    def body(self) -> dict[str, Any] | None: ...


def remote_version(resource: dict[str, Any]) -> str | None:
    """The server's `meta.versionId`, or None."""
    return str((resource.get("meta") or {}).get("versionId") or "") or None


def adds_nothing(held: Held | None, resource: dict[str, Any], remote: str | None) -> bool:
    """True when `resource` is no new version of `held`: the same remote version (a
    redelivery), the same body, or an older version than the one held, arriving late (two
    readers of one server, the later read committed first). Older is decided by numeric
    `meta.versionId` when both have one, else by `meta.lastUpdated` when both have one;
    otherwise a different body is a new version. A deleted resource takes any version."""
    if held is None or held.deleted:
        return False
    if (remote is not None and held.remote_version == remote) or held.body == resource:
        return True
    return _older(resource, remote, held)


def _older(resource: dict[str, Any], remote: str | None, held: Held) -> bool:
    mine, theirs = _number(remote), _number(held.remote_version)
    if mine is not None and theirs is not None:
        return mine < theirs
    arrived, kept = _instant(resource), _instant(held.body or {})
    return arrived is not None and kept is not None and arrived < kept


def _number(version: str | None) -> int | None:
    return int(version) if version and version.isascii() and version.isdigit() else None


def _instant(resource: dict[str, Any]) -> datetime | None:
    """`meta.lastUpdated` as an aware datetime; None when absent or not an instant."""
    value = (resource.get("meta") or {}).get("lastUpdated")
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
