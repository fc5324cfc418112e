"""SMART App Launch scopes (v1 and v2 syntax): parsing, and what a set of scopes grants.

A resource scope is `context/ResourceType.permissions` with context `system`, `user` or
`patient`, a resource type or `*`, and v2 permissions (`c r u d s`, in that order) or the v1
words `read` (= rs), `write` (= cud) and `*` (= cruds). Any other scope (`openid`, `launch`,
`metrics:read`...) is a plain name, matched exactly. A scope with a `?` restriction (SMART v2
granular scopes) grants nothing here: Refloop does not evaluate those restrictions, so it never
widens them into the whole type.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

CONTEXTS = ("system", "user", "patient")
PERMISSIONS = "cruds"
V1 = {"read": "rs", "write": "cud", "*": "cruds"}
#: the permission an interaction needs (FHIR restful interactions, SMART v2 section 3.1)
INTERACTIONS = {"read": "r", "vread": "r", "history-instance": "r", "search-type": "s",
                "search-system": "s", "history-type": "s", "create": "c", "update": "u",
                "patch": "u", "delete": "d"}
_RESOURCE = re.compile(r"^(system|user|patient)/([A-Z][A-Za-z]*|\*)\.([a-z*]+)$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9:._/-]*$")


class ScopeError(ValueError):
    """A scope string that is not well formed; the message says why."""


@dataclass(frozen=True)
class ResourceScope:
    context: str
    resource_type: str  # a FHIR type or "*"
    permissions: str  # a subsequence of "cruds"

    def grants(self, resource_type: str, permission: str) -> bool:
        return self.resource_type in ("*", resource_type) and permission in self.permissions

    def covers(self, other: ResourceScope) -> bool:
        """True when every access `other` grants is also granted by this scope."""
        return (self.context == other.context
                and self.resource_type in ("*", other.resource_type)
                and set(other.permissions) <= set(self.permissions))


def parse_resource_scope(text: str) -> ResourceScope | None:
    """The resource scope `text` names, or None for a plain scope name (openid, metrics:read).
    Raises ScopeError for a resource scope with bad permissions (`.sr`, `.x`)."""
    if "?" in text:
        return None
    match = _RESOURCE.match(text)
    if match is None:
        return None
    context, resource_type, perms = match.groups()
    permissions = V1.get(perms, perms)
    ordered = "".join(p for p in PERMISSIONS if p in permissions)
    if not permissions or ordered != permissions or len(set(permissions)) != len(permissions):
        raise ScopeError(f"{text!r}: permissions must be some of c, r, u, d, s in that order "
                         "(e.g. .rs), or read, write, *")
    return ResourceScope(context, resource_type, permissions)


def check_scope(text: str) -> None:
    """Raise ScopeError unless `text` is a resource scope or a plain scope name."""
    if parse_resource_scope(text) is None and (not _NAME.match(text) or "?" in text):
        raise ScopeError(f"{text!r} is not a scope: use context/Type.permissions "
                         "(system/Task.rs) or a plain name (metrics:read)")


def split(scope: str | Iterable[str] | None) -> list[str]:
    if scope is None:
        return []
    items = scope.split() if isinstance(scope, str) else list(scope)
    return list(dict.fromkeys(s for s in items if s))


def granting_contexts(scopes: Iterable[str], resource_type: str, interaction: str) -> set[str]:
    """The contexts (system, user, patient) in which `scopes` allow `interaction` on
    `resource_type`; empty when none does. Malformed scopes grant nothing."""
    permission = INTERACTIONS[interaction]
    found: set[str] = set()
    for text in scopes:
        try:
            scope = parse_resource_scope(text)
        except ScopeError:
            continue
        if scope is not None and scope.grants(resource_type, permission):
            found.add(scope.context)
    return found


def allowed(requested: Iterable[str], registered: Iterable[str]) -> list[str]:
    """The requested scopes a client registered for `registered` may have: a resource scope when
    one registered scope covers it, a plain name when it was registered as is."""
    held = list(registered)
    held_resources = [s for s in (_safe(h) for h in held) if s is not None]
    granted = []
    for text in split(list(requested)):
        scope = _safe(text)
        if scope is not None:
            if any(h.covers(scope) for h in held_resources):
                granted.append(text)
        elif "?" not in text and text in held:
            granted.append(text)
    return granted


def needed(resource_type: str, interaction: str, context: str = "system") -> str:
    """The v2 scope that allows `interaction` on `resource_type` (for error messages)."""
    return f"{context}/{resource_type}.{INTERACTIONS[interaction]}"


def _safe(text: str) -> ResourceScope | None:
    try:
        return parse_resource_scope(text)
    except ScopeError:
        return None
