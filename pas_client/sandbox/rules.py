"""Sandbox decision rules: an action per procedure code, a default, what a pend becomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ACTIONS = ("approve", "pend", "deny", "modify", "contact", "no-auth")
#: how the sandbox shapes its $submit reply (payers answer in all of these)
REPLY_SHAPES = ("bundle", "claim-response", "claim-response-not-first", "parameters",
                "operation-outcome", "malformed", "foreign-items")


@dataclass
class SandboxRules:
    default: str = "approve"
    by_code: dict[str, str] = field(default_factory=dict)  # code -> approve|pend|deny|modify:X
    after_pend: str = "approve"        # the decision a pended request gets on release
    pend_seconds: float = 0.0          # > 0: release pended requests by itself after this delay
    #: nested (IG example) | flattened (Inferno) | id-only (2.0.1: the focus, to be read)
    notification_shape: str = "nested"
    version: str = "2.2.1"
    reply_shape: str = "bundle"  # one of REPLY_SHAPES
    # eligibility and CRD
    eligibility_active: bool = True
    plan: str = "Sandbox Gold PPO"
    out_of_network: list[str] = field(default_factory=list)  # provider ids or NPIs
    pa_needed: str = ""   # CRD pa-needed for every order; "": no-auth when the rule is no-auth

    def action_for(self, code: str) -> str:
        return self.by_code.get(code, self.default)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SandboxRules:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)
