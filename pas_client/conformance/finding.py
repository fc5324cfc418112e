"""One problem the pre-flight check found, with where it is and which rule it broke."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Finding:
    severity: str  # error | warning | information (a rule that could not be checked)
    path: str      # instance location, e.g. Bundle.entry[0].resource.item[0].extension
    rule: str      # cardinality | type | fixed | pattern | slice | binding | invariant:<key> ...
    message: str
    element: str = ""  # the profile element id, e.g. Claim.item.extension:certificationType

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = f" [{self.element}]" if self.element else ""
        return f"{self.severity.upper():7} {self.path}{where}: {self.message} ({self.rule})"


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]
