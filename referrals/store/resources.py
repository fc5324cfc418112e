"""FHIR resources we hold (ServiceRequest, Patient, Coverage...), each with its version history."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from referrals.errors import ConflictError
from referrals.store.database import Database
from referrals.store.schema import resource_versions, resources

LOCAL = "local"

ResourceKey = tuple[str, str, str]  # (server, resource type, id)


class CurrentVersion(NamedTuple):
    """What `put_over` needs to know about the version we hold (see `current_many`)."""

    version: int
    remote_version: str | None
    deleted: bool
    body: dict[str, Any] | None


class ResourceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def put(self, resource: dict[str, Any], *, server: str = LOCAL,
            conn: Connection | None = None) -> int:
        """Store a new version of `resource` unless it equals the current one; return our version.

        The remote `meta.versionId` is kept; a resource whose remote version we already hold is
        not stored again (redelivered notifications are harmless).
        """
        rtype, rid = resource["resourceType"], str(resource["id"])
        remote = str((resource.get("meta") or {}).get("versionId") or "") or None
        with self.db.using(conn) as c:
            current = self._current(c, server, rtype, rid)
            if current is not None and not current.deleted and (
                (remote is not None and current.remote_version == remote)
                or current.body == resource
            ):
                return int(current.version)
            return self._write(c, server, rtype, rid, resource, remote, current)

    def delete(self, rtype: str, rid: str, *, server: str = LOCAL,
               conn: Connection | None = None) -> int | None:
        """Record a deletion as a new version; None when we never held the resource."""
        with self.db.using(conn) as c:
            current = self._current(c, server, rtype, rid)
            if current is None:
                return None
            if current.deleted:
                return int(current.version)
            return self._write(c, server, rtype, rid, None, None, current)

    def try_get(self, rtype: str, rid: str, *, server: str = LOCAL,
                conn: Connection | None = None) -> dict[str, Any] | None:
        query = sa.select(resources.c.body).where(
            resources.c.server == server, resources.c.resource_type == rtype,
            resources.c.resource_id == rid, resources.c.deleted.is_(False))
        if conn is not None:
            return conn.execute(query).scalar()
        with self.db.read() as c:
            return c.execute(query).scalar()

    def history(self, rtype: str, rid: str, *, server: str = LOCAL) -> list[dict[str, Any]]:
        """Every version we stored, oldest first: version, remote_version, deleted, body."""
        with self.db.read() as c:
            rows = c.execute(
                sa.select(resource_versions).where(
                    resource_versions.c.server == server,
                    resource_versions.c.resource_type == rtype,
                    resource_versions.c.resource_id == rid)
                .order_by(resource_versions.c.version)).mappings().all()
        return [dict(r) for r in rows]

    def current_many(self, keys: Iterable[ResourceKey], conn: Connection
                     ) -> dict[ResourceKey, CurrentVersion]:
        """The current version of each (server, type, id) we hold, in one query.

        For batch writers: read once, then `put_over` each resource with what was read."""
        wanted = set(keys)
        if not wanted:
            return {}
        rows = conn.execute(sa.select(
            resources.c.server, resources.c.resource_type, resources.c.resource_id,
            resources.c.version, resources.c.remote_version, resources.c.deleted,
            resources.c.body).where(resources.c.resource_id.in_(sorted({k[2] for k in wanted}))))
        found: dict[ResourceKey, CurrentVersion] = {}
        for row in rows:
            key = (row.server, row.resource_type, row.resource_id)
            if key in wanted:
                found[key] = CurrentVersion(int(row.version), row.remote_version,
                                            bool(row.deleted), row.body)
        return found

    def put_over(self, resource: dict[str, Any], current: CurrentVersion | None, *,
                 server: str, conn: Connection) -> CurrentVersion:
        """`put` for a caller that already holds the current version (from `current_many` or an
        earlier `put_over` in the same transaction): the same rules, without reading it again.
        Returns the version now current (unchanged when `resource` equals it)."""
        rtype, rid = resource["resourceType"], str(resource["id"])
        remote = str((resource.get("meta") or {}).get("versionId") or "") or None
        if current is not None and not current.deleted and (
            (remote is not None and current.remote_version == remote)
            or current.body == resource
        ):
            return current
        version = self._write(conn, server, rtype, rid, resource, remote, current)
        # a copy: the caller may change its dict afterwards and put it again
        return CurrentVersion(version, remote, False, copy.deepcopy(resource))

    def _current(self, c: Connection, server: str, rtype: str, rid: str) -> Any:
        return c.execute(sa.select(resources).where(
            resources.c.server == server, resources.c.resource_type == rtype,
            resources.c.resource_id == rid)).first()

    def _write(self, c: Connection, server: str, rtype: str, rid: str,
               body: dict[str, Any] | None, remote: str | None, current: Any) -> int:
        now = datetime.now(UTC)
        version = 1 if current is None else int(current.version) + 1
        values = {"version": version, "remote_version": remote, "deleted": body is None,
                  "body": body}
        key = {"server": server, "resource_type": rtype, "resource_id": rid}
        if current is None:
            try:
                with c.begin_nested():
                    c.execute(resources.insert().values(**key, **values, updated_at=now))
            except sa.exc.IntegrityError as exc:  # another writer stored it first
                raise ConflictError(f"{rtype}/{rid}", 0, None) from exc
        else:
            result = c.execute(resources.update().where(
                resources.c.server == server, resources.c.resource_type == rtype,
                resources.c.resource_id == rid, resources.c.version == current.version,
            ).values(**values, updated_at=now))
            if result.rowcount != 1:
                raise ConflictError(f"{rtype}/{rid}", int(current.version), None)
        c.execute(resource_versions.insert().values(**key, **values, recorded_at=now))
        return version
