"""Compile FHIRPath invariants once into Python closures over FHIR JSON.

A compiled expression is `fn(focus, env) -> list`: collections are lists of JSON values (dicts,
strings, numbers, booleans). Choice elements are found by their type suffix (`value` finds
`valueCodeableConcept`). What cannot be evaluated faithfully without type information
(`as(canonical)`, `is Quantity`, `resolve()`, `htmlChecks()`, ...) raises `Unsupported` when the
expression is compiled, so the check can say which invariants it did not evaluate.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pas_client.conformance.fhirpath_functions import function
from pas_client.conformance.fhirpath_parse import FhirPathSyntaxError, Node, parse
from pas_client.conformance.fhirpath_values import (
    Env,
    Fn,
    Unsupported,
    children_named,
    compare,
    distinct,
    equal,
    equivalent,
    single,
    to_bool,
    type_predicate,
)

VARIABLES = {"ucum": "http://unitsofmeasure.org", "sct": "http://snomed.info/sct",
             "loinc": "http://loinc.org"}


def navigate(name: str) -> Fn:
    def run(focus: list[Any], env: Env) -> list[Any]:
        out: list[Any] = []
        for item in focus:
            if name[:1].isupper() and isinstance(item, dict) and item.get("resourceType") == name:
                out.append(item)
            else:
                out.extend(children_named(item, name))
        return out
    return run


def bool_result(value: bool | None) -> list[Any]:
    return [] if value is None else [value]


# --- operators ---------------------------------------------------------------------------------
def logic(symbol: str, left: Fn, right: Fn) -> Fn:
    def run(focus: list[Any], env: Env) -> list[Any]:
        a = to_bool(left(focus, env))
        if symbol == "and" and a is False:
            return [False]
        if symbol == "or" and a is True:
            return [True]
        if symbol == "implies" and a is False:
            return [True]
        b = to_bool(right(focus, env))
        if symbol == "and":
            return bool_result(False if b is False else (True if a and b else None))
        if symbol == "or":
            return bool_result(True if b is True else (False if a is False and b is False
                                                       else None))
        if symbol == "xor":
            return bool_result(None if a is None or b is None else a != b)
        return bool_result(True if b is True else (None if a is None else b))
    return run


def comparison(symbol: str, left: Fn, right: Fn) -> Fn:
    def run(focus: list[Any], env: Env) -> list[Any]:
        a, b = left(focus, env), right(focus, env)
        if symbol in ("~", "!~"):
            same = len(a) == len(b) and all(equivalent(x, y) for x, y in zip(a, b, strict=True))
            return [same if symbol == "~" else not same]
        if not a or not b:
            return []
        if symbol in ("=", "!="):
            if len(a) != len(b):
                return [symbol == "!="]
            results = [equal(x, y) for x, y in zip(a, b, strict=True)]
            if None in results:
                return []
            return [all(results) if symbol == "=" else not all(results)]
        order = compare(single(a, symbol), single(b, symbol))
        if order is None:
            return []
        return [{"<": order < 0, "<=": order <= 0, ">": order > 0, ">=": order >= 0}[symbol]]
    return run


def membership(symbol: str, left: Fn, right: Fn) -> Fn:
    def run(focus: list[Any], env: Env) -> list[Any]:
        a, b = left(focus, env), right(focus, env)
        item, pool = (a, b) if symbol == "in" else (b, a)
        if not item:
            return []
        one = single(item, symbol)
        return [any(equal(one, other) for other in pool)]
    return run


def union(left: Fn, right: Fn) -> Fn:
    def run(focus: list[Any], env: Env) -> list[Any]:
        return distinct(left(focus, env) + right(focus, env))
    return run


def arithmetic(symbol: str, left: Fn, right: Fn) -> Fn:
    def run(focus: list[Any], env: Env) -> list[Any]:
        a, b = left(focus, env), right(focus, env)
        if symbol == "&":
            return ["".join(str(single(x, "&") or "") for x in (a, b))]
        if not a or not b:
            return []
        x, y = single(a, symbol), single(b, symbol)
        if symbol == "+" and isinstance(x, str) and isinstance(y, str):
            return [x + y]
        if isinstance(x, (str, bool, dict)) or isinstance(y, (str, bool, dict)):
            raise Unsupported(f"{symbol} on {type(x).__name__} and {type(y).__name__}")
        if symbol in ("/", "div", "mod") and y == 0:
            return []
        result = {"+": lambda: x + y, "-": lambda: x - y, "*": lambda: x * y,
                  "/": lambda: x / y, "div": lambda: x // y, "mod": lambda: x % y}[symbol]()
        return [result]
    return run


def type_test(kind: str, operand: Fn, type_name: str) -> Fn:
    test = type_predicate(type_name)

    def run(focus: list[Any], env: Env) -> list[Any]:
        values = operand(focus, env)
        if kind == "is":
            return [test(single(values, "is"))] if values else []
        return [v for v in values if test(v)]
    return run


# --- compiling ----------------------------------------------------------------------------------
def compile_node(node: Node) -> Fn:
    kind = node[0]
    if kind == "lit":
        value = node[1]
        return lambda focus, env: [value]
    if kind == "ident":
        return navigate(node[1])
    if kind == "this":
        return lambda focus, env: [] if env.this is None else [env.this]
    if kind == "var":
        return variable(node[1])
    if kind == "dot":
        left, right = compile_node(node[1]), compile_node(node[2])
        return lambda focus, env: right(left(focus, env), env)
    if kind == "index":
        left, index = compile_node(node[1]), compile_node(node[2])

        def run(focus: list[Any], env: Env) -> list[Any]:
            values, at = left(focus, env), single(index(focus, env), "[]")
            return [values[at]] if isinstance(at, int) and 0 <= at < len(values) else []
        return run
    if kind == "neg":
        inner = compile_node(node[1])
        return lambda focus, env: [-v for v in inner(focus, env)]
    if kind == "type":
        return type_test(node[1], compile_node(node[2]), node[3])
    if kind == "call":
        return function(node[1], [compile_node(a) for a in node[2]], node[2])
    return operator(node[1], compile_node(node[2]), compile_node(node[3]))


def operator(symbol: str, left: Fn, right: Fn) -> Fn:
    if symbol in ("and", "or", "xor", "implies"):
        return logic(symbol, left, right)
    if symbol in ("=", "!=", "~", "!~", "<", "<=", ">", ">="):
        return comparison(symbol, left, right)
    if symbol in ("in", "contains"):
        return membership(symbol, left, right)
    if symbol == "|":
        return union(left, right)
    return arithmetic(symbol, left, right)


def variable(name: str) -> Fn:
    if name in VARIABLES:
        value = VARIABLES[name]
        return lambda focus, env: [value]
    if name == "resource":
        return lambda focus, env: [env.resource]
    if name == "rootResource":
        return lambda focus, env: [env.root]
    if name == "context":
        return lambda focus, env: [env.context]
    raise Unsupported(f"variable %{name}")


@cache
def compile_expression(expression: str) -> Fn:
    """Raises Unsupported or FhirPathSyntaxError when it cannot be compiled."""
    try:
        tree = parse(expression)
    except FhirPathSyntaxError as exc:
        raise Unsupported(f"cannot parse: {exc}") from exc
    return compile_node(tree)


