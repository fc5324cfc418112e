"""Required bindings, compiled from the value sets expanded in the package data.

A binding knows, per code system it allows, the codes (or None when they cannot be listed
here). So a code from the wrong system fails even when the value set cannot be expanded
(SNOMED CT where CPT or HCPCS is required, `icd-10` where ICD-10-CM is), and a CodeableConcept
with text only fails a required binding.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pas_client.conformance.profiles import strip_version
from pas_client.terminology_build import X12_VALUE_SETS, x12_systems


@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str = ""
    unchecked: str = ""  # what could not be checked, when ok


@dataclass(frozen=True)
class Binding:
    url: str
    systems: dict[str, frozenset[str] | None] | None  # None: nothing known about the value set
    notes: tuple[str, ...] = ()
    fallback: Binding | None = field(default=None, compare=False)

    @property
    def checkable(self) -> bool:
        return self.systems is not None

    def with_fallback(self, fallback: Binding) -> Binding:
        return replace(self, fallback=fallback)

    def check(self, value: Any, type_code: str) -> Verdict:
        if self.systems is None:
            if self.fallback is not None:
                verdict = self.fallback.check(value, type_code)
                note = (f"value set {self.url} is not available here: checked against the base "
                        f"value set {self.fallback.url}")
                return verdict if not verdict.ok else Verdict(True, unchecked=note)
            return Verdict(True, unchecked=self.notes[0] if self.notes else
                           f"value set {self.url} is not available here")
        if type_code == "CodeableConcept":
            return self.concept(value)
        if type_code in ("Coding", "Quantity"):
            if type_code == "Quantity" and "code" not in value:
                return Verdict(True)
            return self.coding(value)
        if isinstance(value, str):
            return self.code(value)
        return Verdict(True)

    def concept(self, value: Any) -> Verdict:
        raw = value.get("coding", []) if isinstance(value, dict) else []
        codings = [c for c in (raw if isinstance(raw, list) else [raw]) if isinstance(c, dict)]
        if not codings:
            return Verdict(False, f"no coding from the required value set {self.url}"
                           + (" (text alone is not enough)" if "text" in value else ""))
        verdicts = [self.coding(c) for c in codings]
        passing = [v for v in verdicts if v.ok]
        return passing[0] if passing else verdicts[0]

    def coding(self, coding: dict[str, Any]) -> Verdict:
        assert self.systems is not None
        system, code = coding.get("system"), coding.get("code")
        allowed = ", ".join(sorted(self.systems)) or "(none)"
        if not system:
            return Verdict(False, f"coding without a system; the required value set {self.url} "
                           f"draws on {allowed}")
        if system not in self.systems:
            return Verdict(False, f"code system {system} is not allowed by the required value "
                           f"set {self.url}; use {allowed}")
        codes = self.systems[system]
        if codes is None:
            return Verdict(True, unchecked=self.note_for(system))
        if code not in codes:
            return Verdict(False, f"code {code!r} is not in {system} as the required value set "
                           f"{self.url} lists it")
        return Verdict(True)

    def code(self, code: str) -> Verdict:
        assert self.systems is not None
        if any(codes is None for codes in self.systems.values()):
            if any(codes is not None and code in codes for codes in self.systems.values()):
                return Verdict(True)
            return Verdict(True, unchecked=self.notes[0] if self.notes else self.url)
        if any(code in codes for codes in self.systems.values() if codes is not None):
            return Verdict(True)
        listed = sorted({c for codes in self.systems.values() if codes for c in codes})
        shown = ", ".join(listed[:12]) + (" ..." if len(listed) > 12 else "")
        return Verdict(False, f"{code!r} is not in the required value set {self.url} "
                       f"({shown})")

    def note_for(self, system: str) -> str:
        for note in self.notes:
            if system in note:
                return note
        return f"codes of {system} are not checked (value set {self.url})"


def compile_binding(value_set: str, value_sets: dict[str, dict[str, Any]]) -> Binding:
    url = strip_version(value_set)
    data = value_sets.get(url)
    if data is None:
        if url.startswith(X12_VALUE_SETS):
            systems = x12_systems(url)
            return Binding(url, dict.fromkeys(systems), (
                f"X12 codes are licensed: only the code system ({', '.join(systems)}) is "
                "checked",))
        return Binding(url, None, (f"value set {url} is not available here",))
    listed: dict[str, list[str] | None] | None = data.get("systems")
    if listed is None:
        return Binding(url, None, tuple(data.get("notes", [])))
    return Binding(url, {s: frozenset(c) if c is not None else None for s, c in listed.items()},
                   tuple(data.get("notes", [])))
