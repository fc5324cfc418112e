"""The FHIRPath functions the profiles' invariants call, compiled to closures.

Iterating functions (where, select, all, exists with criteria, repeat) evaluate their argument
once per item with that item as focus and `$this`; the others evaluate their arguments against
the current `$this`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pas_client.conformance.fhirpath_parse import Node
from pas_client.conformance.fhirpath_values import (
    Env,
    EvaluationError,
    Fn,
    Unsupported,
    children_named,
    distinct,
    equal,
    single,
    to_bool,
    today_text,
    type_predicate,
)

UNSUPPORTED = {"resolve", "htmlChecks", "conformsTo", "lowBoundary", "highBoundary",
               "precision", "aggregate", "encode", "decode", "escape", "unescape"}


def each(arg: Fn, item: Any, env: Env) -> list[Any]:
    saved = env.this
    env.this = item
    try:
        return arg([item], env)
    finally:
        env.this = saved


def here(arg: Fn, env: Env) -> list[Any]:
    return arg([] if env.this is None else [env.this], env)


def one_string(values: list[Any], name: str) -> str | None:
    value = single(values, name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise EvaluationError(f"{name} needs a string, found {type(value).__name__}")
    return value


def function(name: str, args: list[Fn], nodes: list[Node]) -> Fn:
    if name in UNSUPPORTED:
        raise Unsupported(f"{name}() needs what the pre-flight check does not have")
    if name in ("ofType", "is", "as"):
        if len(nodes) != 1 or nodes[0][0] != "ident":
            raise Unsupported(f"{name}() with {nodes}")
        test = type_predicate(nodes[0][1])
        if name == "is":
            return lambda focus, env: [test(single(focus, "is"))] if focus else []
        return lambda focus, env: [v for v in focus if test(v)]
    if name in ITERATING:
        return ITERATING[name](args)
    if name in SIMPLE:
        return SIMPLE[name]
    if name in WITH_ARGS:
        return WITH_ARGS[name](args)
    raise Unsupported(f"function {name}()")


# --- iterating --------------------------------------------------------------------------------
def where(args: list[Fn]) -> Fn:
    (criteria,) = args
    return lambda focus, env: [v for v in focus if to_bool(each(criteria, v, env)) is True]


def select(args: list[Fn]) -> Fn:
    (projection,) = args
    return lambda focus, env: [x for v in focus for x in each(projection, v, env)]


def all_(args: list[Fn]) -> Fn:
    (criteria,) = args
    return lambda focus, env: [all(to_bool(each(criteria, v, env)) is True for v in focus)]


def exists(args: list[Fn]) -> Fn:
    if not args:
        return lambda focus, env: [bool(focus)]
    (criteria,) = args
    return lambda focus, env: [any(to_bool(each(criteria, v, env)) is True for v in focus)]


def repeat(args: list[Fn]) -> Fn:
    (projection,) = args

    def run(focus: list[Any], env: Env) -> list[Any]:
        out: list[Any] = []
        todo = list(focus)
        while todo:
            found = each(projection, todo.pop(0), env)
            new = [v for v in found if not any(v is seen for seen in out)]
            out.extend(new)
            todo.extend(new)
        return out
    return run


ITERATING: dict[str, Callable[[list[Fn]], Fn]] = {
    "where": where, "select": select, "all": all_, "exists": exists, "repeat": repeat}


# --- without arguments ------------------------------------------------------------------------
def descendants(focus: list[Any], env: Env) -> list[Any]:
    out: list[Any] = []
    todo = children(focus, env)
    while todo:
        item = todo.pop(0)
        out.append(item)
        todo.extend(children([item], env))
    return out


def children(focus: list[Any], env: Env) -> list[Any]:
    out: list[Any] = []
    for item in focus:
        if isinstance(item, dict):
            for key, value in item.items():
                if key != "resourceType" and not key.startswith("_"):
                    out.extend(value if isinstance(value, list) else [value])
    return out


def has_value(focus: list[Any], env: Env) -> list[Any]:
    return [len(focus) == 1 and not isinstance(focus[0], dict)]


def to_string(focus: list[Any], env: Env) -> list[Any]:
    value = single(focus, "toString")
    if value is None or isinstance(value, dict):
        return []
    if isinstance(value, bool):
        return ["true" if value else "false"]
    return [str(value)]


def to_integer(focus: list[Any], env: Env) -> list[Any]:
    value = single(focus, "toInteger")
    if isinstance(value, bool):
        return [int(value)]
    if isinstance(value, int):
        return [value]
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value):
        return [int(value)]
    return []


def to_decimal(focus: list[Any], env: Env) -> list[Any]:
    value = single(focus, "toDecimal")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+(\.\d+)?", value):
        return [float(value)]
    return []


def is_distinct(focus: list[Any], env: Env) -> list[Any]:
    return [len(distinct(focus)) == len(focus)]


def not_(focus: list[Any], env: Env) -> list[Any]:
    value = to_bool(focus)
    return [] if value is None else [not value]


def length(focus: list[Any], env: Env) -> list[Any]:
    value = one_string(focus, "length")
    return [] if value is None else [len(value)]


SIMPLE: dict[str, Fn] = {
    "empty": lambda focus, env: [not focus],
    "count": lambda focus, env: [len(focus)],
    "not": not_,
    "first": lambda focus, env: focus[:1],
    "last": lambda focus, env: focus[-1:],
    "tail": lambda focus, env: focus[1:],
    "single": lambda focus, env: [single(focus, "single")] if focus else [],
    "distinct": lambda focus, env: distinct(focus),
    "isDistinct": is_distinct,
    "allTrue": lambda focus, env: [all(v is True for v in focus)],
    "anyTrue": lambda focus, env: [any(v is True for v in focus)],
    "allFalse": lambda focus, env: [all(v is False for v in focus)],
    "anyFalse": lambda focus, env: [any(v is False for v in focus)],
    "hasValue": has_value,
    "children": children,
    "descendants": descendants,
    "toString": to_string,
    "toInteger": to_integer,
    "toDecimal": to_decimal,
    "length": length,
    "lower": lambda focus, env: [s.lower() for s in focus[:1] if isinstance(s, str)],
    "upper": lambda focus, env: [s.upper() for s in focus[:1] if isinstance(s, str)],
    "today": lambda focus, env: [today_text()],
    "trace": lambda focus, env: focus,
}


# --- with arguments ---------------------------------------------------------------------------
def string_test(test: Callable[[str, str], bool]) -> Callable[[list[Fn]], Fn]:
    def make(args: list[Fn]) -> Fn:
        def run(focus: list[Any], env: Env) -> list[Any]:
            value = one_string(focus, "string function")
            argument = one_string(here(args[0], env), "string argument")
            if value is None or argument is None:
                return []
            return [test(value, argument)]
        return run
    return make


def substring(args: list[Fn]) -> Fn:
    def run(focus: list[Any], env: Env) -> list[Any]:
        value = one_string(focus, "substring")
        start = single(here(args[0], env), "substring")
        if value is None or not isinstance(start, int) or not 0 <= start < len(value):
            return []
        if len(args) > 1:
            count = single(here(args[1], env), "substring")
            return [value[start:start + count]] if isinstance(count, int) else []
        return [value[start:]]
    return run


def replace_matches(args: list[Fn]) -> Fn:
    def run(focus: list[Any], env: Env) -> list[Any]:
        value = one_string(focus, "replaceMatches")
        pattern = one_string(here(args[0], env), "replaceMatches")
        substitute = one_string(here(args[1], env), "replaceMatches")
        if value is None or pattern is None or substitute is None:
            return []
        return [re.sub(pattern, substitute, value)]
    return run


def iif(args: list[Fn]) -> Fn:
    def run(focus: list[Any], env: Env) -> list[Any]:
        condition = to_bool(here(args[0], env))
        if condition is True:
            return here(args[1], env)
        return here(args[2], env) if len(args) > 2 else []
    return run


def combining(kind: str) -> Callable[[list[Fn]], Fn]:
    def make(args: list[Fn]) -> Fn:
        def run(focus: list[Any], env: Env) -> list[Any]:
            other = here(args[0], env)
            if kind == "combine":
                return focus + other
            if kind == "union":
                return distinct(focus + other)
            keep = kind == "intersect"
            return distinct([v for v in focus
                             if any(equal(v, o) is True for o in other) == keep])
        return run
    return make


def extension(args: list[Fn]) -> Fn:
    def run(focus: list[Any], env: Env) -> list[Any]:
        url = one_string(here(args[0], env), "extension")
        return [e for item in focus for e in children_named(item, "extension")
                if isinstance(e, dict) and e.get("url") == url]
    return run


def member_of(args: list[Fn]) -> Fn:
    def run(focus: list[Any], env: Env) -> list[Any]:
        url = one_string(here(args[0], env), "memberOf")
        value = single(focus, "memberOf")
        if value is None or url is None:
            return []
        found = env.member_of(value, url) if env.member_of else None
        if found is None:
            raise EvaluationError(f"value set {url} cannot be expanded here")
        return [found]
    return run


def skip_take(kind: str) -> Callable[[list[Fn]], Fn]:
    def make(args: list[Fn]) -> Fn:
        def run(focus: list[Any], env: Env) -> list[Any]:
            count = single(here(args[0], env), kind)
            if not isinstance(count, int):
                return []
            return focus[count:] if kind == "skip" else focus[:max(count, 0)]
        return run
    return make


WITH_ARGS: dict[str, Callable[[list[Fn]], Fn]] = {
    "matches": string_test(lambda v, p: re.search(p, v, re.DOTALL) is not None),
    "startsWith": string_test(lambda v, p: v.startswith(p)),
    "endsWith": string_test(lambda v, p: v.endswith(p)),
    "contains": string_test(lambda v, p: p in v),
    "substring": substring,
    "replaceMatches": replace_matches,
    "iif": iif,
    "combine": combining("combine"),
    "union": combining("union"),
    "intersect": combining("intersect"),
    "exclude": combining("exclude"),
    "extension": extension,
    "memberOf": member_of,
    "skip": skip_take("skip"),
    "take": skip_take("take"),
}
