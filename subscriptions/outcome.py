"""OperationOutcome and the small FHIR replies the hook endpoint sends."""

from __future__ import annotations

from typing import Any


def build_operation_outcome(severity: str, code: str, text: str,
                            expression: str | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": text}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def build_transaction_response() -> dict[str, Any]:
    """What HAPI's client expects back from a notification Bundle POST (else it retries)."""
    return {"resourceType": "Bundle", "type": "transaction-response"}
