"""What an accepted access token allows: its scopes and the data they reach."""

from __future__ import annotations

from dataclasses import dataclass

from access.scopes import granting_contexts

#: issuer name for tokens Refloop issued itself
LOCAL_ISSUER = "refloop"


@dataclass(frozen=True)
class Grant:
    """An authenticated caller.

    `sources`: the referral sources (source-key prefixes such as `fhir|https://ehr/fhir`) of the
    caller's tenant, or None when the caller is not limited to a tenant. `patient`: the patient in
    context (`Patient/123`) for patient/ scopes, when the token carried one.
    """

    client_id: str
    scopes: tuple[str, ...]
    issuer: str = LOCAL_ISSUER
    tenant: str | None = None
    sources: tuple[str, ...] | None = None
    patient: str | None = None
    user: str = ""

    def has(self, name: str) -> bool:
        return name in self.scopes

    @property
    def limit(self) -> str:
        """What the token is limited to, in words ("one patient", "tenant 'north'"), or ""
        when it may see every referral."""
        if self.patient:
            return "one patient"
        if self.tenant is not None or self.sources is not None:
            return f"tenant '{self.tenant}'" if self.tenant else "some referral sources"
        return ""

    def reach(self, resource_type: str, interaction: str) -> Reach | None:
        """The broadest data this grant may read with `interaction` on `resource_type`, or None
        when no scope allows it. A user/ scope needs a tenant; a patient/ scope needs a patient
        in context (and the tenant, when the issuer belongs to one)."""
        contexts = granting_contexts(self.scopes, resource_type, interaction)
        if "system" in contexts:
            return Reach("system", self.sources, None)
        if "user" in contexts and self.sources is not None:
            return Reach("user", self.sources, None)
        if "patient" in contexts and self.patient:
            return Reach("patient", self.sources, self.patient)
        return None


@dataclass(frozen=True)
class Reach:
    """The compartment one interaction may see: every referral (sources None) or those of the
    listed sources, and only `patient`'s when set."""

    context: str
    sources: tuple[str, ...] | None
    patient: str | None


class InvalidToken(Exception):
    """The bearer token is not accepted (unknown, expired, wrong audience, bad signature...);
    the message is safe to send back in `error_description` (it never holds the token)."""
