"""A PAYER SANDBOX, for the demo and tests only: a fake of a payer's PAS endpoint (a peer that
cannot run here). It answers $submit and $inquire by configurable rules, pends and later delivers
the decision as a backport subscription notification, and rejects malformed bundles. It is not
a payer and makes no real decisions."""

from pas_client.sandbox.rules import SandboxRules
from pas_client.sandbox.server import SandboxServer, create_sandbox_app
from pas_client.sandbox.token import SandboxAuth

__all__ = ["SandboxAuth", "SandboxRules", "SandboxServer", "create_sandbox_app"]
