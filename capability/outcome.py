"""OperationOutcome responses for the FHIR edge."""

from __future__ import annotations

from typing import Any

FHIR_JSON = "application/fhir+json"


def operation_outcome(diagnostics: str, *, code: str = "invalid", severity: str = "error",
                      expression: str | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}
