"""Reconciliation polling: the safety net under every push flavour, and the whole mechanism for
servers without subscriptions.

`GET [base]/ServiceRequest?<criteria>&_lastUpdated=ge<cursor - overlap>&_sort=_lastUpdated` with
the includes the referral needs, following `next` links; every match goes through the same
intake (which skips versions already processed). The durable cursor is the server's clock at the
start of the poll (its `Date` header), advanced only after every page was processed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from referrals.store.cursors import Cursors
from subscriptions.client import FhirClient
from subscriptions.config import FhirServer
from subscriptions.intake import INCLUDES, Fetched, Intake, read_coverages, split_search_page
from subscriptions.mapping import matches_criteria

log = logging.getLogger("refloop.subscriptions.reconcile")

PageDone = Callable[[int, int], None]  # (page number, matches on the page)


@dataclass(frozen=True)
class ReconcileResult:
    server: str
    pages: int
    seen: int
    outcomes: dict[str, int]
    since: str | None
    cursor: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def cursor_name(server: str) -> str:
    return f"subscriptions:lastUpdated:{server}"


def build_query(server: FhirServer, since: str | None) -> list[tuple[str, str]]:
    params = list(server.criteria_params)
    if since:
        params.append(("_lastUpdated", f"ge{since}"))
    params += [("_sort", "_lastUpdated"), ("_count", str(server.page_size))]
    params += [("_include", i) for i in INCLUDES]
    return params


@dataclass
class Reconciler:
    cursors: Cursors
    intake: Intake

    def run(self, server: FhirServer, client: FhirClient,
            on_page: PageDone | None = None) -> ReconcileResult:
        stored = self.cursors.try_get(cursor_name(server.base))
        since = _minus(stored, server.overlap_seconds) if stored else None
        reply = client.get(server.criteria_type, build_query(server, since))
        started = _server_time(reply.headers)
        pages, seen = 0, 0
        outcomes: dict[str, int] = {}
        bundle: Any = reply.body
        while isinstance(bundle, dict):
            pages += 1
            matches, included = split_search_page(bundle)
            for sr in matches:
                seen += 1
                outcome = self._one(server, client, sr, included)
                key = outcome.split(" ")[0]
                outcomes[key] = outcomes.get(key, 0) + 1
            if on_page is not None:
                on_page(pages, len(matches))
            following = _next_link(bundle)
            bundle = client.get(following).body if following else None
        self.cursors.set(cursor_name(server.base), started)
        log.info("reconciled", extra={"server": server.base, "pages": pages, "seen": seen,
                                      "outcomes": outcomes})
        return ReconcileResult(server.base, pages, seen, outcomes, since, started)

    def _one(self, server: FhirServer, client: FhirClient, sr: dict[str, Any],
             included: dict[str, dict[str, Any]]) -> str:
        if not matches_criteria(sr, server.criteria_params):
            return "ignored (criteria)"
        mine = {**included, **read_coverages(client, sr, included)}
        return self.intake.apply(server.base, Fetched(sr, mine), sr_id=str(sr["id"]),
                                 source=f"fhir:{server.base}", source_message="reconcile")


def _next_link(bundle: dict[str, Any]) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None


def _server_time(headers: dict[str, str]) -> str:
    """The server's clock from its Date header (ours if absent), as a FHIR instant."""
    moment = datetime.now(UTC)
    date = next((v for k, v in headers.items() if k.lower() == "date"), None)
    if date:
        with contextlib.suppress(TypeError, ValueError):
            moment = parsedate_to_datetime(date).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _minus(instant: str, seconds: float) -> str:
    moment = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    return (moment - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
