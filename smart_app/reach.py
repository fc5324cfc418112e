"""What one launch may see: the referrals of its tenant's organisation (the referral sources of
the `[[access.tenants]]` entry its `[[smart.tenants]]` entry names) and, when the EHR limited the
launch to one patient (no user/ scope for referrals granted), that patient's referrals only.

Every view, list, count and action behind a launch goes through this: the worklist and its tasks
filter with `sources`/`patient`, and each referral a URL names is fetched with `checked`, which
refuses one outside the launch's reach (`OutsideReach`, a 403 page and an AuditEvent with
outcome 4).
"""

from __future__ import annotations

from dataclasses import dataclass

from referrals.errors import RefloopError
from referrals.model import Referral, source_key_prefixes
from smart_app.config import SmartConfig
from smart_app.runtime import SmartRuntime
from smart_app.sessions import Session


class OutsideReach(RefloopError):
    """A referral this launch may not see; the message says why, without naming the patient."""

    def __init__(self, referral: Referral, why: str) -> None:
        super().__init__(why)
        self.referral = referral


@dataclass(frozen=True)
class Reach:
    #: the tenant's referral sources (source-key prefixes); None: every referral
    sources: tuple[str, ...] | None = None
    #: None: not limited to a patient; else the launch's patient ("" when the EHR limited the
    #: launch to a patient but named none: then nothing is visible)
    patient: str | None = None
    #: the launch's FHIR servers: its patient id means that person on these servers only
    patient_servers: tuple[str, ...] = ()

    @property
    def patient_limited(self) -> bool:
        return self.patient is not None

    @property
    def query_sources(self) -> tuple[str, ...] | None:
        """The sources a query is limited to: none at all for a patient-limited launch with no
        patient in context."""
        return () if self.patient == "" else self.sources

    def in_sources(self, source_key: str) -> bool:
        """Whether the referral's source is one of the organisation's (always, with no limit)."""
        return self.sources is None or any(source_key.startswith(s + "|") for s in self.sources)

    def allows(self, source_key: str, patient: str) -> bool:
        if not self.in_sources(source_key):
            return False
        if self.patient is None:
            return True
        return bool(self.patient) and patient == self.patient and \
            source_key.startswith(source_key_prefixes(self.patient_servers))

    def why_not(self, referral: Referral) -> str:
        if not self.in_sources(referral.source_key):
            return ("This referral belongs to another organisation than the EHR you launched "
                    "Refloop from, so it is not shown here.")
        return ("The EHR gave this launch access to one patient's records only, and this "
                "referral is about another patient (or came from another EHR).")


def reach_of(config: SmartConfig, session: Session) -> Reach:
    """The reach of `session`'s launch. A session whose tenant is no longer configured sees
    nothing."""
    tenant = config.tenant(session.tenant)
    sources = tenant.sources if tenant is not None else ()
    servers = tenant.context_servers if tenant is not None else (session.iss,)
    patient = session.context.patient if session.context.patient_limited else None
    return Reach(sources=sources, patient=patient, patient_servers=servers)


@dataclass(frozen=True)
class SourcesNotice:
    """The launch's organisation has referral sources and no referral came from any of them."""

    access_tenant: str
    sources: tuple[str, ...]


def unmatched_sources(rt: SmartRuntime, session: Session) -> SourcesNotice | None:
    """What the worklist and dashboard say when the launch's organisation's configured sources
    match no referral (they would show nothing, with no hint why); None otherwise. One index
    probe per source."""
    tenant = rt.config.tenant(session.tenant)
    if tenant is None or not tenant.sources:
        return None
    if len(rt.store.unmatched_sources(tenant.sources)) < len(tenant.sources):
        return None
    return SourcesNotice(tenant.access_tenant, tenant.sources)


def checked(rt: SmartRuntime, session: Session, referral_id: str) -> Referral:
    """The referral, when this launch may see it; NotFound when there is none, OutsideReach
    when it is another organisation's (or, in a patient-limited launch, another patient's)."""
    referral = rt.store.get(referral_id)
    reach = reach_of(rt.config, session)
    if not reach.allows(referral.source_key, referral.patient):
        raise OutsideReach(referral, reach.why_not(referral))
    return referral
