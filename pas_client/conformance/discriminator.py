"""Which slice an instance value belongs to, by the slicing's discriminators
(value, pattern, type; paths like `url`, `$this`, `resource`, `category`,
`extension('<url>').value.ofType(boolean)`)."""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING, Any

from pas_client.conformance.primitives import contains, fhir_type
from pas_client.conformance.profiles import Element, Profile, strip_version

if TYPE_CHECKING:
    from pas_client.conformance.plan import Plan

EXTENSION_CALL = re.compile(r"^extension\('([^']+)'\)")
MISSING = object()
_UNSET = object()
#: the value each slice's discriminator expects, by (id of the slice element, path); the
#: elements live as long as the compiled plan
_EXPECTED: dict[tuple[int, str], Any] = {}


def slice_matches(profiles: Plan, profile: Profile, base: Element, slice_: Element,
                  key: str, value: Any) -> bool:
    for discriminator in base["slicing"].get("discriminator", []):
        kind, path = discriminator["type"], discriminator["path"]
        if kind == "type" and path == "$this":
            if choice_code(base, key) not in {t["code"] for t in slice_.get("type", [])}:
                return False
            continue
        if kind == "type":
            if not _type_matches(profile, slice_, path, value):
                return False
            continue
        if kind == "profile":
            continue
        key_ = (id(slice_), path)
        expected = _EXPECTED.get(key_, _UNSET)
        if expected is _UNSET:
            expected = _EXPECTED[key_] = expected_value(profiles, profile, slice_, path)
        if expected is MISSING:
            return False
        actual = instance_values(value, path)
        if not any(contains(a, expected) for a in actual):
            return False
    return True


def choice_code(ed: Element, key: str) -> str | None:
    """The type a choice key names (valueBoolean -> boolean)."""
    name = ed["id"].rsplit(".", 1)[-1].split(":", 1)[0]
    if not name.endswith("[x]"):
        return None
    suffix = key[len(name) - 3:]
    for type_ in ed.get("type", []):
        code = fhir_type(type_["code"])
        if code.lower() == suffix.lower():
            return code
    return None


def _type_matches(profile: Profile, slice_: Element, path: str, value: Any) -> bool:
    target = profile.by_id.get(f"{slice_['id']}.{path}")
    if target is None or not isinstance(value, dict):
        return False
    kinds = {t["code"] for t in target.get("type", [])}
    node = value.get(path)
    return isinstance(node, dict) and node.get("resourceType") in kinds


def expected_value(profiles: Plan, profile: Profile, slice_: Element, path: str) -> Any:
    """The fixed or pattern value the slice declares at `path`."""
    element: Element | None = slice_
    for step in _steps(path):
        if element is None:
            return MISSING
        element = _step(profile, element, step)
    if element is None:
        return MISSING
    for key, val in element.items():
        if key.startswith(("fixed", "pattern")):
            return val
    if path == "url" or path.endswith(".url"):
        return _extension_url(element)
    return MISSING


@cache
def _steps(path: str) -> list[str]:
    path = re.sub(r"\.ofType\(\w+\)| as \w+", "", path)
    match = EXTENSION_CALL.match(path)
    if match:
        rest = path[match.end():].lstrip(".")
        return [f"extension:{match.group(1)}"] + ([s for s in rest.split(".") if s])
    return [] if path == "$this" else path.split(".")


def _step(profile: Profile, element: Element, step: str) -> Element | None:
    if step.startswith("extension:"):
        url = step.split(":", 1)[1]
        for slice_ in profile.slices.get(f"{element['id']}.extension", []):
            if _extension_url(slice_) == url:
                return slice_
        return None
    if step == "url" and element["id"].rsplit(".", 1)[-1].startswith("extension"):
        return profile.by_id.get(f"{element['id']}.url") or element
    for name in (step, f"{step}[x]"):
        found = profile.by_id.get(f"{element['id']}.{name}")
        if found is not None:
            return found
    return None


def _extension_url(element: Element) -> Any:
    if "fixedUri" in element:
        return element["fixedUri"]
    for type_ in element.get("type", []):
        for url in type_.get("profile", []):
            return strip_version(url)
    return MISSING


def instance_values(value: Any, path: str) -> list[Any]:
    nodes = [value]
    for step in _steps(path):
        nxt: list[Any] = []
        for node in nodes:
            if not isinstance(node, dict):
                continue
            if step.startswith("extension:"):
                url = step.split(":", 1)[1]
                nxt.extend(e for e in node.get("extension", []) if e.get("url") == url)
            elif step == "value":
                nxt.extend(v for k, v in node.items() if k.startswith("value"))
            else:
                item = node.get(step, MISSING)
                if item is not MISSING:
                    nxt.extend(item if isinstance(item, list) else [item])
        nodes = nxt
    return nodes
