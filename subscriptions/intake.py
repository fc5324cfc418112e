"""Turn one version of an EHR ServiceRequest into referral state, exactly once.

Both push (notifications) and pull (reconciliation) end here. Inside one transaction: lock the
per-resource "processed" row, skip versions already processed (redeliveries, overlapping polls,
out-of-order notifications), store the resources, open or update the referral through the
lifecycle. "New or update" comes from our own state, never from the HTTP method.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from referrals.errors import IllegalTransition, PeerError
from referrals.model import Actor, Command, Reason, Referral, Stage
from referrals.service import ReferralService
from referrals.store.database import Database
from referrals.store.referrals import ReferralStore
from referrals.store.resources import CurrentVersion, ResourceStore
from subscriptions.client import FhirClient
from subscriptions.mapping import (
    OPENING_STATUSES,
    changed_fields,
    source_key,
    to_referral_draft,
    to_referral_fields,
)
from subscriptions.notification import to_relative_reference
from subscriptions.tables import processed

LISTENER = Actor("Device/refloop-subscriptions", "Refloop EHR listener", "system")
INCLUDES = ("ServiceRequest:subject", "ServiceRequest:requester", "ServiceRequest:performer")
REVOKED = Reason("revoked-in-ehr", "The ServiceRequest was revoked in the EHR")
ERRONEOUS = Reason("entered-in-error", "The ServiceRequest was entered in error in the EHR")
DELETED = Reason("deleted-in-ehr", "The ServiceRequest was deleted in the EHR")

log = logging.getLogger("refloop.subscriptions.intake")

#: (server, type, id) -> the version we hold (None: none), for a batch's transaction
Held = dict[tuple[str, str, str], CurrentVersion | None]


@dataclass(frozen=True)
class Fetched:
    """A ServiceRequest as the EHR has it now, with the resources it references."""

    service_request: dict[str, Any] | None  # None: gone (deleted) on the server
    included: dict[str, dict[str, Any]]


def read_service_request(client: FhirClient, sr_id: str) -> Fetched:
    """Re-read the ServiceRequest with patient, requester, performer and insurance Coverage."""
    params = [("_id", sr_id), *[("_include", i) for i in INCLUDES]]
    bundle = client.get("ServiceRequest", params).body or {}
    resources: list[dict[str, Any]] = [
        e["resource"] for e in bundle.get("entry") or []
        if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    found = next((r for r in resources if r.get("resourceType") == "ServiceRequest"
                  and str(r.get("id")) == sr_id), None)
    included = {f"{r['resourceType']}/{r['id']}": r for r in resources
                if r is not found and r.get("id")}
    if found is not None:
        included.update(read_coverages(client, found, included))
    return Fetched(found, included)


def read_service_requests(client: FhirClient, sr_ids: list[str]) -> dict[str, Fetched]:
    """Re-read several ServiceRequests in one search (`_id=a,b,...` with the same includes),
    their Coverages and payer Organizations in one more; each id maps to what a single
    `read_service_request` would give (a ServiceRequest the server no longer has: None)."""
    params = [("_id", ",".join(sr_ids)), ("_count", str(len(sr_ids))),
              *[("_include", i) for i in INCLUDES]]
    bundle: Any = client.get("ServiceRequest", params).body
    matches: list[dict[str, Any]] = []
    included: dict[str, dict[str, Any]] = {}
    while isinstance(bundle, dict):
        page_matches, page_included = split_search_page(bundle)
        matches += page_matches
        included.update(page_included)
        following = next((str(link["url"]) for link in bundle.get("link") or []
                          if isinstance(link, dict) and link.get("relation") == "next"
                          and link.get("url")), None)
        bundle = client.get(following).body if following else None
    wanted = set(sr_ids)
    found = {str(sr["id"]): sr for sr in matches if str(sr.get("id")) in wanted}
    coverages = sorted({ref for sr in found.values() for ref in _insurance(sr)} - set(included))
    if coverages:
        included.update(_search_coverages(client, coverages))
    result: dict[str, Fetched] = {}
    for sr_id in sr_ids:
        sr = found.get(sr_id)
        if sr is None:
            result[sr_id] = Fetched(None, {})
            continue
        mine = {ref: included[ref] for ref in _references(sr, included) if ref in included}
        mine.update(read_coverages(client, sr, mine))  # what the searches did not bring
        result[sr_id] = Fetched(sr, mine)
    return result


def _insurance(sr: dict[str, Any]) -> list[str]:
    refs = [to_relative_reference((i or {}).get("reference")) for i in sr.get("insurance") or []]
    return [r for r in refs if r and r.startswith("Coverage/")]


def _references(sr: dict[str, Any], included: dict[str, dict[str, Any]]) -> list[str]:
    """The resources a ServiceRequest's referral needs: subject, requester, performers,
    Coverages and their payer Organizations."""
    refs = [(sr.get(name) or {}).get("reference") for name in ("subject", "requester")]
    refs += [(p or {}).get("reference") for p in sr.get("performer") or []]
    found = [r for r in (to_relative_reference(x) for x in refs) if r]
    for coverage in _insurance(sr):
        found.append(coverage)
        found += _payor_organizations(included.get(coverage) or {})
    return found


def _search_coverages(client: FhirClient, references: list[str]) -> dict[str, dict[str, Any]]:
    """Coverages (and their payor Organizations) in one search; {} when the server refuses it
    (each is then read on its own)."""
    ids = [r.partition("/")[2] for r in references]
    try:
        reply = client.send("GET", "Coverage", params=[
            ("_id", ",".join(ids)), ("_count", str(len(ids))), ("_include", "Coverage:payor")],
            ok=(200, 400, 404))
    except PeerError:
        return {}
    if reply.status != 200 or not isinstance(reply.body, dict):
        return {}
    found: dict[str, dict[str, Any]] = {}
    for entry in reply.body.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("id") and resource.get("resourceType"):
            found[f"{resource['resourceType']}/{resource['id']}"] = resource
    return found


def split_search_page(bundle: dict[str, Any]) -> tuple[list[dict[str, Any]],
                                                        dict[str, dict[str, Any]]]:
    """(matched ServiceRequests, included resources by "Type/id") of a search page."""
    matches, included = [], {}
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not resource.get("id"):
            continue
        mode = (entry.get("search") or {}).get("mode", "match")
        if mode == "match" and resource.get("resourceType") == "ServiceRequest":
            matches.append(resource)
        else:
            included[f"{resource['resourceType']}/{resource['id']}"] = resource
    return matches, included


def read_coverages(client: FhirClient, service_request: dict[str, Any],
                   known: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Coverage resources the ServiceRequest's `insurance` points to (R4 has no _include for
    them) and the Organizations their `payor` references (the payer's name when the Coverage
    carries no `payor.display`). A resource that cannot be read is left out, not fatal."""
    found: dict[str, dict[str, Any]] = {}
    for insurance in service_request.get("insurance") or []:
        reference = to_relative_reference((insurance or {}).get("reference"))
        if reference and reference.startswith("Coverage/"):
            coverage = known.get(reference) or _try_read(client, reference)
            if coverage is None:
                continue
            if reference not in known:
                found[reference] = coverage
            for payor in _payor_organizations(coverage):
                if payor not in known and payor not in found:
                    organization = _try_read(client, payor)
                    if organization is not None:
                        found[payor] = organization
    return found


def _payor_organizations(coverage: dict[str, Any]) -> list[str]:
    """"Organization/x" references of a Coverage's payors that carry no display."""
    references = []
    for payor in coverage.get("payor") or []:
        if isinstance(payor, dict) and not payor.get("display"):
            reference = to_relative_reference(payor.get("reference"))
            if reference and reference.startswith("Organization/"):
                references.append(reference)
    return references


def _try_read(client: FhirClient, reference: str) -> dict[str, Any] | None:
    try:
        reply = client.send("GET", reference, ok=(200, 404, 410))
    except PeerError:
        return None
    return reply.body if reply.status == 200 and isinstance(reply.body, dict) else None


@dataclass
class Intake:
    db: Database
    store: ReferralStore
    referrals: ReferralService
    resources: ResourceStore

    def apply(self, server: str, fetched: Fetched, *, sr_id: str, source: str,
              source_message: str = "", conn: Connection | None = None,
              held: Held | None = None) -> str:
        """Apply what the EHR says now; returns what happened (created, updated, ...). Joins
        the caller's write transaction `conn`, or commits one of its own. `held`: the versions
        we hold, read once for a batch in this transaction and kept current here."""
        with self.db.using(conn) as conn:
            last = self._lock(conn, server, sr_id)
            service_request = fetched.service_request
            if service_request is None:
                return self._gone(conn, server, sr_id, source, source_message)
            version = _version(service_request)
            if last is not None and not _newer(version, _updated(service_request), last):
                return "duplicate"
            self._store(conn, server, [service_request, *fetched.included.values()], held)
            outcome = self._referral(conn, server, service_request, fetched.included, source,
                                     source_message)
            self._mark(conn, server, sr_id, version, _updated(service_request))
        log.info("service request processed", extra={"server": server, "outcome": outcome,
                                                      "version": version, "source": source})
        return outcome

    def _store(self, conn: Connection, server: str, found: list[dict[str, Any]],
               held: Held | None = None) -> None:
        """Store each resource unless we hold its remote version: one query reads what we
        hold (the patient and requester repeat across referrals), unless the batch did."""
        keys = [(server, r["resourceType"], str(r["id"])) for r in found]
        known: Held = held if held is not None else {}
        unread = [k for k in keys if k not in known]
        if unread:
            fresh = self.resources.current_many(unread, conn)
            known.update({k: fresh.get(k) for k in unread})
        for key, resource in zip(keys, found, strict=True):
            known[key] = self.resources.put_over(resource, known.get(key), server=server,
                                                 conn=conn)

    def _referral(self, conn: Connection, server: str, sr: dict[str, Any],
                  included: dict[str, dict[str, Any]], source: str, message: str) -> str:
        status = str(sr.get("status") or "")
        existing = self.store.try_get_by_source(source_key(server, str(sr["id"])), conn)
        if existing is None:
            if status not in OPENING_STATUSES:
                return f"ignored ({status or 'no status'})"
            draft = to_referral_draft(server, sr, included)
            self.referrals.open(draft, self._command("detect", source, message), conn=conn)
            return "created"
        if existing.terminal:
            return "unchanged (referral finished)"
        if status == "revoked":
            return self._cancel(conn, existing, source, message)
        if status == "entered-in-error":
            self._act(conn, existing, self._command("fail", source, message, ERRONEOUS))
            return "failed"
        changes = changed_fields(existing, to_referral_fields(sr, included))
        if status == "completed":
            self._act(conn, existing, self._command("amend", source, message, changes=changes,
                                                    note="ServiceRequest completed in the EHR"))
            return "recorded (completed)"
        if not changes:
            return "unchanged"
        self._act(conn, existing, self._command("amend", source, message, changes=changes))
        return "updated"

    def _cancel(self, conn: Connection, referral: Referral, source: str, message: str) -> str:
        if referral.stage != Stage.CANCEL_REQUESTED:
            referral = self._act(conn, referral, self._command("request-cancel", source, message,
                                                               REVOKED))
        self._act(conn, referral, self._command("cancel", source, message, REVOKED))
        return "cancelled"

    def _gone(self, conn: Connection, server: str, sr_id: str, source: str, message: str) -> str:
        existing = self.store.try_get_by_source(source_key(server, sr_id), conn)
        self.resources.delete("ServiceRequest", sr_id, server=server, conn=conn)
        self._mark(conn, server, sr_id, "deleted", "")
        if existing is None or existing.terminal:
            return "gone"
        self._act(conn, existing, self._command("fail", source, message, DELETED))
        return "failed (deleted)"

    def _act(self, conn: Connection, referral: Referral, command: Command) -> Referral:
        try:
            return self.referrals.act(referral.id, command, conn=conn)
        except IllegalTransition as exc:
            log.warning("lifecycle refused an EHR change", extra={"referral": referral.id,
                                                                  "action": command.action,
                                                                  "why": exc.why})
            return referral

    def _command(self, action: str, source: str, message: str, reason: Reason | None = None,
                 changes: dict[str, Any] | None = None, note: str = "") -> Command:
        if note:
            reason = Reason("ehr-status", note)
        return Command(action, actor=LISTENER, reason=reason, source=source,
                       source_message=message, changes=changes or {})

    def _lock(self, conn: Connection, server: str, sr_id: str) -> tuple[str, str] | None:
        """Create-or-lock the processed row; returns (version, lastUpdated) processed before."""
        key = {"server": server, "resource_type": "ServiceRequest", "resource_id": sr_id}
        insert = (postgresql.insert(processed) if self.db.dialect == "postgresql"
                  else sqlite.insert(processed))
        # RETURNING, not rowcount: psycopg reports rowcount -1 for this INSERT (SQLAlchemy 2)
        inserted = conn.execute(insert.values(**key, version="", last_updated="",
                                              processed_at=datetime.now(UTC))
                                .on_conflict_do_nothing()
                                .returning(processed.c.resource_id)).first() is not None
        query = sa.select(processed.c.version, processed.c.last_updated).where(
            *[processed.c[k] == v for k, v in key.items()])
        if self.db.dialect == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).one()
        if inserted or not row.version:
            return None
        return str(row.version), str(row.last_updated)

    def _mark(self, conn: Connection, server: str, sr_id: str, version: str,
              last_updated: str) -> None:
        conn.execute(processed.update().where(
            processed.c.server == server, processed.c.resource_type == "ServiceRequest",
            processed.c.resource_id == sr_id,
        ).values(version=version, last_updated=last_updated, processed_at=datetime.now(UTC)))


def _version(resource: dict[str, Any]) -> str:
    return str((resource.get("meta") or {}).get("versionId") or "")


def _updated(resource: dict[str, Any]) -> str:
    return str((resource.get("meta") or {}).get("lastUpdated") or "")


def _newer(version: str, updated: str, last: tuple[str, str]) -> bool:
    """Is (version, lastUpdated) newer than what we processed? Numeric versions compare as
    numbers; otherwise lastUpdated decides; unknown means "process it" (idempotent anyway)."""
    last_version, last_updated = last
    if last_version == "deleted":
        return True
    if version.isdigit() and last_version.isdigit():
        return int(version) > int(last_version)
    if updated and last_updated:
        return updated > last_updated
    return version != last_version or not version
