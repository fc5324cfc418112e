"""FHIR resources we hold (ServiceRequest, Patient, Coverage...), each with its version history."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from referrals.errors import ConflictError
from referrals.store.bulk import Bulk, Processed
from referrals.store.database import Database
from referrals.store.schema import JSONType, Moment, resource_versions, resources
from referrals.store.versions import adds_nothing, remote_version

LOCAL = "local"

ResourceKey = tuple[str, str, str]  # (server, resource type, id)


class CurrentVersion(NamedTuple):
    """What `put_over` needs to know about the version we hold (see `current_many`)."""

    version: int
    remote_version: str | None
    deleted: bool
    body: dict[str, Any] | None
    #: when it was stored (read from the store; None for a version decided in this batch)
    at: datetime | None = None


@dataclass
class PendingWrites:
    """Resource versions decided in memory and not written yet (`put_later`)."""

    #: the version each resource had in the database before the batch (None: not stored)
    stored: dict[ResourceKey, CurrentVersion | None] = field(default_factory=dict)
    #: the newest version of each resource
    latest: dict[ResourceKey, CurrentVersion] = field(default_factory=dict)
    #: every version, in order (the history rows)
    versions: list[tuple[ResourceKey, CurrentVersion]] = field(default_factory=list)

    def clear(self) -> None:
        self.stored.clear()
        self.latest.clear()
        self.versions.clear()


_BULK_UPDATE = Bulk(resources.update().where(
    resources.c.server == sa.bindparam("k_server"),
    resources.c.resource_type == sa.bindparam("k_type"),
    resources.c.resource_id == sa.bindparam("k_id"),
    resources.c.version == sa.bindparam("match_version"),
).values(version=sa.bindparam("v_version", type_=sa.Integer),
         remote_version=sa.bindparam("v_remote", type_=sa.String),
         deleted=sa.bindparam("v_deleted", type_=sa.Boolean),
         body=sa.bindparam("v_body", type_=JSONType),
         updated_at=sa.bindparam("v_at", type_=Moment)))
_BULK_INSERT = Bulk(resources.insert())
_BULK_INSERT_VERSION = Bulk(resource_versions.insert())
#: the history row of a first version, written when the second one is (it may exist already:
#: stores written before first versions were kept in `resources` alone have one)
_BULK_INSERT_FIRST = Bulk(lambda dialect: _dialect_insert(dialect).on_conflict_do_nothing())


def _dialect_insert(dialect: str) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(resource_versions)


_CURRENT_MANY = sa.select(
    resources.c.resource_id, resources.c.version, resources.c.remote_version,
    resources.c.deleted, resources.c.body, resources.c.updated_at,
).where(resources.c.server == sa.bindparam("server"),
        resources.c.resource_type == sa.bindparam("rtype"),
        resources.c.resource_id.in_(sa.bindparam("ids", expanding=True)))


def json_copy(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, scalars): copy.deepcopy without its memo and
    dispatch, several times faster on resource bodies."""
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_copy(v) for v in value]
    return value


class ResourceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def put(self, resource: dict[str, Any], *, server: str = LOCAL,
            conn: Connection | None = None) -> int:
        """Store a new version of `resource` unless it equals the current one; return our version.

        The remote `meta.versionId` is kept; a resource whose remote version we already hold,
        or an older one, is not stored again (redelivered notifications are harmless; see
        `versions.adds_nothing`). Concurrent writers of one resource take turns: the current
        row is locked while the new version is decided (PostgreSQL; SQLite has one writer).
        """
        rtype, rid = resource["resourceType"], str(resource["id"])
        remote = remote_version(resource)
        with self.db.using(conn) as c:
            for _ in range(2):  # a new resource another writer inserted meanwhile: once more
                current = self._current(c, server, rtype, rid, lock=True)
                if current is not None and adds_nothing(current, resource, remote):
                    return int(current.version)
                version = self._write(c, server, rtype, rid, resource, remote, current)
                if version is not None:
                    return version
            raise ConflictError(f"{rtype}/{rid}", 0, None)

    def delete(self, rtype: str, rid: str, *, server: str = LOCAL,
               conn: Connection | None = None) -> int | None:
        """Record a deletion as a new version; None when we never held the resource."""
        with self.db.using(conn) as c:
            current = self._current(c, server, rtype, rid, lock=True)
            if current is None:
                return None
            if current.deleted:
                return int(current.version)
            return self._checked(self._write(c, server, rtype, rid, None, None, current),
                                 rtype, rid)

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
        """Every version we stored, oldest first: version, remote_version, deleted, body (and
        the key and recorded_at). A resource still at its first version has no history row:
        that version is the current one."""
        with self.db.read() as c:
            rows = [dict(r) for r in c.execute(
                sa.select(resource_versions).where(
                    resource_versions.c.server == server,
                    resource_versions.c.resource_type == rtype,
                    resource_versions.c.resource_id == rid)
                .order_by(resource_versions.c.version)).mappings()]
            current = self._current(c, server, rtype, rid)
        if current is not None and all(r["version"] != current.version for r in rows):
            rows.append(_version_row((server, rtype, rid), current, current.at))
        return rows

    def current_many(self, keys: Iterable[ResourceKey], conn: Connection
                     ) -> dict[ResourceKey, CurrentVersion]:
        """The current version of each (server, type, id) we hold, in one query.

        For batch writers: read once, then `put_over` each resource with what was read."""
        groups: dict[tuple[str, str], set[str]] = {}
        for server, rtype, rid in keys:
            groups.setdefault((server, rtype), set()).add(rid)
        found: dict[ResourceKey, CurrentVersion] = {}
        for (server, rtype), ids in groups.items():  # the primary key's order: an index lookup
            rows = conn.execute(_CURRENT_MANY, {"server": server, "rtype": rtype,
                                                "ids": sorted(ids)})
            for row in rows:
                found[(server, rtype, row.resource_id)] = CurrentVersion(
                    int(row.version), row.remote_version, bool(row.deleted), row.body,
                    row.updated_at)
        return found

    def put_over(self, resource: dict[str, Any], current: CurrentVersion | None, *,
                 server: str, conn: Connection) -> CurrentVersion:
        """`put` for a caller that already holds the current version (from `current_many` or an
        earlier `put_over` in the same transaction): the same rules, without reading it again.
        Returns the version now current (unchanged when `resource` equals it)."""
        rtype, rid = resource["resourceType"], str(resource["id"])
        remote = remote_version(resource)
        if current is not None and adds_nothing(current, resource, remote):
            return current
        version = self._checked(self._write(conn, server, rtype, rid, resource, remote,
                                            current), rtype, rid)
        # a copy: the caller may change its dict afterwards and put it again
        return CurrentVersion(version, remote, False, json_copy(resource))

    def put_later(self, resource: dict[str, Any], current: CurrentVersion | None, *,
                  server: str, pending: PendingWrites) -> CurrentVersion:
        """`put_over` without writing yet: the version is decided now (same rules) and kept in
        `pending` until `write_pending` writes every version of a batch together.

        `resource` becomes the version's body: the caller must not change it afterwards (put a
        new dict instead). Not copying it saves a deep copy per resource in batch writers."""
        rtype, rid = resource["resourceType"], str(resource["id"])
        remote = remote_version(resource)
        if current is not None and adds_nothing(current, resource, remote):
            return current
        key = (server, rtype, rid)
        version = 1 if current is None else current.version + 1
        body = resource
        if key not in pending.stored:
            pending.stored[key] = current
        latest = CurrentVersion(version, remote, False, body)
        pending.latest[key] = latest
        pending.versions.append((key, latest))
        return latest

    def write_pending(self, pending: PendingWrites, conn: Connection) -> None:
        """Write a batch's versions: one INSERT for new resources, one UPDATE (checked against
        the version each was read at: a lost race raises ConflictError) for the others, one
        INSERT for the history. `pending` is empty afterwards."""
        if not pending.versions:
            return
        now = _BULK_INSERT.process(conn, "updated_at", datetime.now(UTC))
        bodies = {key: _BULK_INSERT.process(conn, "body", latest.body)
                  for key, latest in pending.latest.items()}
        inserts, updates = [], []
        for key, latest in pending.latest.items():
            stored = pending.stored[key]
            if stored is None:
                inserts.append({"server": key[0], "resource_type": key[1],
                                "resource_id": key[2], "version": latest.version,
                                "remote_version": latest.remote_version,
                                "deleted": latest.deleted, "body": bodies[key],
                                "updated_at": now})
            else:
                updates.append({"k_server": key[0], "k_type": key[1], "k_id": key[2],
                                "match_version": stored.version, "v_version": latest.version,
                                "v_remote": latest.remote_version, "v_deleted": latest.deleted,
                                "v_body": bodies[key], "v_at": now})
        try:
            _BULK_INSERT.run(conn, inserts)
        except sa.exc.IntegrityError as exc:  # another writer stored one of them first
            raise ConflictError(f"{len(inserts)} new resources", 0, None) from exc
        if updates and _BULK_UPDATE.run(conn, updates) != len(updates):
            raise ConflictError(f"one of {len(updates)} resources", 0, None)
        _BULK_INSERT_FIRST.run(conn, [
            _version_row(key, stored, stored.at or now) for key, stored in pending.stored.items()
            if stored is not None and stored.version == 1])
        _BULK_INSERT_VERSION.run(conn, [
            _version_row(key, v, now, bodies[key] if v is pending.latest[key] else v.body)
            for key, v in pending.versions
            if v.version > 1 or v is not pending.latest[key]])
        pending.clear()

    @staticmethod
    def _checked(version: int | None, rtype: str, rid: str) -> int:
        if version is None:  # a caller that read no row lost the race to insert it
            raise ConflictError(f"{rtype}/{rid}", 0, None)
        return version

    def _current(self, c: Connection, server: str, rtype: str, rid: str, *,
                 lock: bool = False) -> CurrentVersion | None:
        """The version we hold; `lock` holds its row until the transaction ends (PostgreSQL's
        FOR UPDATE, which waits for a concurrent writer and then reads what it committed;
        SQLite's write transaction holds the whole database already)."""
        query = sa.select(resources).where(
            resources.c.server == server, resources.c.resource_type == rtype,
            resources.c.resource_id == rid)
        row = c.execute(query.with_for_update() if lock else query).first()
        return None if row is None else CurrentVersion(
            int(row.version), row.remote_version, bool(row.deleted), row.body, row.updated_at)

    def _write(self, c: Connection, server: str, rtype: str, rid: str,
               body: dict[str, Any] | None, remote: str | None,
               current: CurrentVersion | None) -> int | None:
        """Write the version after `current`; None when `current` is None and another writer
        inserted the resource first (nothing written)."""
        now = datetime.now(UTC)
        version = 1 if current is None else int(current.version) + 1
        values = {"version": version, "remote_version": remote, "deleted": body is None,
                  "body": body}
        key = {"server": server, "resource_type": rtype, "resource_id": rid}
        if current is None:
            inserted = c.execute(_first_insert(c.dialect.name).values(
                **key, **values, updated_at=now).on_conflict_do_nothing()
                .returning(resources.c.version)).first()
            if inserted is None:  # (the driver's rowcount is -1 here on PostgreSQL)
                return None
        else:
            result = c.execute(resources.update().where(
                resources.c.server == server, resources.c.resource_type == rtype,
                resources.c.resource_id == rid, resources.c.version == current.version,
            ).values(**values, updated_at=now))
            if result.rowcount != 1:
                raise ConflictError(f"{rtype}/{rid}", int(current.version), None)
        if current is not None and current.version == 1:
            _BULK_INSERT_FIRST.run(c, [_version_row((server, rtype, rid), current,
                                                    current.at or now)])
        if version > 1:  # a first version is kept in `resources` alone until the second
            c.execute(resource_versions.insert().values(**key, **values, recorded_at=now))
        return version


def _first_insert(dialect: str) -> Any:
    """INSERT of a new resource that does nothing when another writer inserted it first (on
    PostgreSQL after waiting for that writer's transaction to end)."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(resources)


def _version_row(key: ResourceKey, version: CurrentVersion, at: datetime | Processed | None,
                 body: Any = None) -> dict[str, Any]:
    """A `resource_versions` row of `version` (its body, or `body`: one already processed)."""
    return {"server": key[0], "resource_type": key[1], "resource_id": key[2],
            "version": version.version, "remote_version": version.remote_version,
            "deleted": version.deleted, "body": version.body if body is None else body,
            "recorded_at": at}
