"""A FHIRPath parser for the invariants of the profiles: tokens, then a precedence-climbing
parser that yields a small tuple tree the compiler in fhirpath.py turns into Python closures.

Node shapes: ("lit", value) | ("ident", name) | ("this",) | ("var", name)
| ("call", name, [args]) | ("dot", left, right) | ("index", left, expr)
| ("op", symbol, left, right) | ("neg", expr) | ("type", "is"|"as", left, type name)
"""

from __future__ import annotations

import re
from typing import Any

Node = tuple[Any, ...]


class FhirPathSyntaxError(ValueError):
    pass


TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<date>@[0-9T:.\-+Z]+)
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<ident>`[^`]+`|[A-Za-z_][A-Za-z0-9_]*)
  | (?P<special>\$this|\$index|\$total)
  | (?P<var>%(?:`[^`]+`|'[^']+'|[A-Za-z_][A-Za-z0-9_\-]*))
  | (?P<op><=|>=|!=|!~|[-+*/&|=~<>().,\[\]])
""", re.VERBOSE | re.DOTALL)

#: binary operators by precedence, loosest first
LEVELS: list[tuple[str, ...]] = [("implies",), ("or", "xor"), ("and",), ("in", "contains"),
                                 ("=", "~", "!=", "!~"), ("<=", "<", ">", ">="), ("|",),
                                 ("is", "as"), ("+", "-", "&"), ("*", "/", "div", "mod")]
WORD_OPS = {op for level in LEVELS for op in level if op.isalpha()}
ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n",
           "r": "\r", "t": "\t"}


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = TOKEN.match(text, pos)
        if match is None:
            raise FhirPathSyntaxError(f"unexpected {text[pos:pos + 10]!r}")
        pos = match.end()
        kind = match.lastgroup or ""
        if kind in ("space", "comment"):
            continue
        tokens.append((kind, match.group()))
    return tokens


def unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", lambda m: chr(int(m.group(1)[1:], 16))
                  if m.group(1).startswith("u") and len(m.group(1)) == 5
                  else ESCAPES.get(m.group(1), m.group(1)), body)


class Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise FhirPathSyntaxError(f"expected {value or 'more'}, found {token}")
        self.pos += 1
        return token

    def parse(self) -> Node:
        node = self.binary(0)
        if self.peek() is not None:
            raise FhirPathSyntaxError(f"unexpected {self.peek()}")
        return node

    def binary(self, level: int) -> Node:
        if level == len(LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while True:
            token = self.peek()
            if token is None or token[1] not in LEVELS[level] or \
                    (token[0] == "ident" and token[1] not in WORD_OPS):
                return left
            self.pos += 1
            if token[1] in ("is", "as"):
                left = ("type", token[1], left, self.type_name())
            else:
                left = ("op", token[1], left, self.binary(level + 1))

    def type_name(self) -> str:
        name = self.take()[1].strip("`")
        while self.peek() == ("op", "."):
            self.pos += 1
            name = self.take()[1].strip("`")  # FHIR.X / System.X: the last part names it
        return name

    def unary(self) -> Node:
        token = self.peek()
        if token is not None and token[1] in ("-", "+") and token[0] == "op":
            self.pos += 1
            inner = self.unary()
            return ("neg", inner) if token[1] == "-" else inner
        return self.postfix(self.term())

    def postfix(self, node: Node) -> Node:
        while True:
            token = self.peek()
            if token == ("op", "."):
                self.pos += 1
                node = ("dot", node, self.invocation())
            elif token == ("op", "["):
                self.pos += 1
                index = self.binary(0)
                self.take("]")
                node = ("index", node, index)
            else:
                return node

    def term(self) -> Node:
        kind, value = self.take()
        if kind == "string":
            return ("lit", unquote(value))
        if kind == "number":
            return ("lit", float(value) if "." in value else int(value))
        if kind == "date":
            return ("lit", value[1:])
        if kind == "special":
            return ("this",) if value == "$this" else ("var", value)
        if kind == "var":
            return ("var", value[1:].strip("`'"))
        if value == "(":
            node = self.binary(0)
            self.take(")")
            return node
        if value in ("true", "false"):
            return ("lit", value == "true")
        if value == "{":
            raise FhirPathSyntaxError("empty collection literals are not supported")
        self.pos -= 1
        return self.invocation()

    def invocation(self) -> Node:
        kind, value = self.take()
        if kind == "special":
            return ("this",)
        if kind != "ident":
            raise FhirPathSyntaxError(f"expected a name, found {value!r}")
        name = value.strip("`")
        if self.peek() == ("op", "(") and not value.startswith("`"):
            self.pos += 1
            args: list[Node] = []
            if self.peek() != ("op", ")"):
                args.append(self.binary(0))
                while self.peek() == ("op", ","):
                    self.pos += 1
                    args.append(self.binary(0))
            self.take(")")
            return ("call", name, args)
        return ("ident", name)


def parse(text: str) -> Node:
    return Parser(text).parse()
