"""PocketBase-style access-rule filter expressions.

A rule is compiled once with :func:`compile_rule` (or ``Rule(source)``) and then
evaluated cheaply per request with :meth:`Rule.evaluate` against a
:class:`RequestInfo`.

Grammar
-------
::

    rule       := or_expr END
    or_expr    := and_expr ( "||" and_expr )*
    and_expr   := term ( "&&" term )*
    term       := "(" or_expr ")" | operand [ OP operand ]
    OP         := "=" | "!=" | ">" | ">=" | "<" | "<=" | "~" | "!~"
    operand    := STRING | NUMBER | "true" | "false" | "null" | FIELD
    STRING     := '"' ... '"' | "'" ... "'"   (backslash escapes the quote and backslash;
                                               any other backslash is kept literally)
    NUMBER     := [ "-" ] DIGITS [ "." DIGITS ]
    FIELD      := "@request.auth." NAME ( "." NAME )*
                | "@request.body." NAME ( "." NAME )*
                | "@request.query." NAME
                | "@request.headers." NAME
                | "@request.method"
    NAME       := [A-Za-z_][A-Za-z0-9_]*

``&&`` binds tighter than ``||``; whitespace is insignificant and ``//`` starts
a comment that runs to the end of the line.  A term without an operator (for
example ``true`` or ``@request.auth.verified``) is used as a boolean.  Anything
else -- unknown ``@`` identifiers, unterminated strings, dangling operators,
unbalanced parentheses, an empty rule, trailing garbage, more than
``64`` levels of nested parentheses -- raises :class:`RuleSyntaxError` at
compile time; its message names the 0-based character position and what was
expected, e.g. ``rule error at position 17: expected an operand, found '&&'``.

Evaluation semantics
--------------------
* **Field resolution.** A missing field resolves to ``None`` (``null``): the
  guest's ``@request.auth.*`` (``RequestInfo.auth is None``), an absent body key,
  a body (or intermediate path value) that is not a JSON object, an absent
  query parameter or header.  Header names are normalised on both sides:
  lower-cased with ``-`` replaced by ``_`` (``X-Token`` is
  ``@request.headers.x_token``).  ``@request.method`` is upper-cased.
* **Empty values.** ``null`` and ``""`` are both "empty" and compare equal to
  each other with ``=``/``!=``: for a guest ``@request.auth.id = ""`` is true and
  ``@request.auth.id != ""`` is false.  ``null = null`` is true.  An empty value
  never equals a non-empty one (``null = 0`` and ``null = false`` are false).
  Beware: two missing fields are equal, so ``@request.body.owner =
  @request.auth.id`` holds for a guest who sends no ``owner``; guard such rules
  with ``@request.auth.id != ""``.
* **``=`` / ``!=``.** If either side is a boolean, booleans compare to booleans
  and to the exact strings ``"true"``/``"false"`` (booleans are not numbers:
  ``true = 1`` is false).  Otherwise, if both sides are numbers or
  numeric-looking strings (query and header values are strings), they compare
  numerically (``"1.0" = 1`` is true).  Otherwise both sides compare as strings,
  where numbers use their decimal form and objects/arrays their compact JSON
  (``{"a":1}``).  ``!=`` is always the negation of ``=``.
* **``<``, ``<=``, ``>``, ``>=``.** Numeric when both sides are numeric (numbers or
  numeric strings); otherwise code-point string comparison when both sides are
  non-null strings.  Two empty values (``null``/``""``) are equal, so ``<=`` and
  ``>=`` are true and ``<``/``>`` false for them; any other comparison involving
  ``null``, booleans, objects or arrays is false.  ``a < b`` always equals
  ``b > a``.
* **``~`` / ``!~``.** Case-insensitive *contains*.  Both sides are converted to
  strings as for ``=``.  If the right operand contains an unescaped ``%`` it is a
  SQL ``LIKE`` pattern matched against the whole left value: ``%`` matches any
  run of characters, ``_`` exactly one, and ``\\`` escapes the next character
  (``\\%``, ``\\_``, ``\\\\``).  Otherwise it is a plain substring test -- as
  PocketBase does, the value is escaped and wrapped as ``%value%``, so ``_`` is
  literal there (``\\%`` still means a literal ``%``).  If either side is
  ``null`` then ``~`` is false; ``!~`` is always the negation of ``~``.
* **Truthiness** of a bare operand: ``null``, ``""``, ``false`` and numeric zero
  are false; everything else (including the string ``"false"``) is true.
* ``&&`` and ``||`` short-circuit.
* Evaluation never raises: values are handled defensively and, as a last
  resort, an unexpected internal error makes :meth:`Rule.evaluate` return
  ``False`` (deny).
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

__all__ = ["RequestInfo", "Rule", "RuleSyntaxError", "compile_rule"]

_MAX_NESTING: Final = 64
_IDENT_START: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_DIGITS: Final = frozenset("0123456789")
_IDENT_CHARS: Final = _IDENT_START | _DIGITS
_NAMESPACES: Final = ("auth", "body", "query", "headers", "method")
_NUMERIC_RE: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INT_RE: Final = re.compile(r"[+-]?[0-9]+")


# --------------------------------------------------------------------------- public types


class RuleSyntaxError(ValueError):
    """A rule failed to compile.

    Attributes:
        rule: the full rule source.
        position: 0-based character offset of the problem in ``rule``.
        detail: the message without the ``rule error at position N:`` prefix.
    """

    rule: str
    position: int
    detail: str

    def __init__(self, rule: str, position: int, detail: str) -> None:
        super().__init__(f"rule error at position {position}: {detail}")
        self.rule = rule
        self.position = position
        self.detail = detail

    def __reduce__(self) -> tuple[type[RuleSyntaxError], tuple[str, int, str]]:
        return (type(self), (self.rule, self.position, self.detail))


@dataclass(frozen=True)
class RequestInfo:
    """The request data a rule can reference.

    Attributes:
        auth: the authenticated record (``None`` for a guest), e.g.
            ``{"id": "...", "email": "...", "collectionName": "users"}``.
        body: the decoded JSON body (usually a dict) or ``None``.
        query: query-string parameters.
        headers: request headers; names are matched case-insensitively with
            ``-`` and ``_`` treated alike.
        method: the HTTP method.
    """

    auth: Mapping[str, Any] | None = None
    body: Any = None
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    method: str = "GET"


_Getter = Callable[[RequestInfo], object]
_Predicate = Callable[[RequestInfo], bool]


class Rule:
    """A compiled access rule.

    ``Rule(source)`` compiles ``source`` (raising :class:`RuleSyntaxError` when
    it is malformed); :meth:`evaluate` runs it against a request.  Rules are
    immutable and safe to share between threads.
    """

    __slots__ = ("_predicate", "source")

    source: str
    _predicate: _Predicate

    def __init__(self, source: str) -> None:
        if not isinstance(source, str):
            raise TypeError(f"rule source must be a str, not {type(source).__name__}")
        self.source = source
        self._predicate = _Parser(source).parse()

    def evaluate(self, info: RequestInfo) -> bool:
        """Return whether ``info`` satisfies the rule.  Never raises."""
        try:
            return self._predicate(info) is True
        except Exception:  # defensive: fail closed
            return False

    def __repr__(self) -> str:
        return f"Rule({self.source!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rule):
            return NotImplemented
        return self.source == other.source

    def __hash__(self) -> int:
        return hash((Rule, self.source))


def compile_rule(source: str) -> Rule:
    """Compile ``source`` into a :class:`Rule`.

    Raises:
        RuleSyntaxError: if ``source`` is not a well-formed rule.
    """
    return Rule(source)


# --------------------------------------------------------------------------- lexer


@dataclass(frozen=True, slots=True)
class _Token:
    # kind: "string" "number" "literal" "word" "field" "op" "and" "or" "(" ")" "end"
    kind: str
    text: str
    pos: int
    value: object = None
    getter: _Getter | None = None


def _quote(text: str) -> str:
    if len(text) > 40:
        text = text[:37] + "..."
    return repr(text)


def _describe_at(src: str, pos: int) -> str:
    """Describe what is found at ``pos`` for an error message."""
    if pos >= len(src):
        return "end of rule"
    c = src[pos]
    charset = _IDENT_CHARS if c in _IDENT_CHARS else None
    if charset is None:
        return _quote(c)
    end = pos
    while end < len(src) and src[end] in charset:
        end += 1
    return _quote(src[pos:end])


def _describe(tok: _Token) -> str:
    return "end of rule" if tok.kind == "end" else _quote(tok.text)


def _parse_int(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:  # beyond the int/str conversion digit limit
        return float(text)


class _Lexer:
    """On-demand tokenizer with one token of look-ahead (so the leftmost error wins)."""

    def __init__(self, src: str) -> None:
        self._src = src
        self._pos = 0
        self._peeked: _Token | None = None

    def peek(self) -> _Token:
        if self._peeked is None:
            self._peeked = self._scan()
        return self._peeked

    def next(self) -> _Token:
        tok = self.peek()
        self._peeked = None
        return tok

    def _error(self, pos: int, expected: str) -> RuleSyntaxError:
        return RuleSyntaxError(
            self._src, pos, f"expected {expected}, found {_describe_at(self._src, pos)}"
        )

    def _skip_blank(self) -> None:
        src, i, n = self._src, self._pos, len(self._src)
        while i < n:
            c = src[i]
            if c.isspace():
                i += 1
            elif c == "/" and src.startswith("//", i):
                newline = src.find("\n", i)
                i = n if newline < 0 else newline + 1
            else:
                break
        self._pos = i

    def _ident_end(self, i: int) -> int:
        src, n = self._src, len(self._src)
        if i >= n or src[i] not in _IDENT_START:
            return i
        i += 1
        while i < n and src[i] in _IDENT_CHARS:
            i += 1
        return i

    def _emit(self, kind: str, start: int, end: int, value: object = None) -> _Token:
        self._pos = end
        return _Token(kind, self._src[start:end], start, value)

    def _scan(self) -> _Token:
        self._skip_blank()
        src, i = self._src, self._pos
        if i >= len(src):
            return _Token("end", "", i)
        c = src[i]
        if c == '"' or c == "'":
            return self._string(i)
        if c in _DIGITS or c == "-":
            return self._number(i)
        if c in _IDENT_START:
            end = self._ident_end(i)
            word = src[i:end]
            if word in _KEYWORDS:
                return self._emit("literal", i, end, _KEYWORDS[word])
            return self._emit("word", i, end)
        if c == "@":
            return self._field(i)
        if c == "(" or c == ")":
            return self._emit(c, i, i + 1)
        two = src[i : i + 2]
        if two in ("!=", "!~", ">=", "<="):
            return self._emit("op", i, i + 2)
        if c in "=<>~":
            return self._emit("op", i, i + 1)
        if two == "&&":
            return self._emit("and", i, i + 2)
        if two == "||":
            return self._emit("or", i, i + 2)
        if c == "&":
            raise RuleSyntaxError(src, i, "expected '&&', found '&'")
        if c == "|":
            raise RuleSyntaxError(src, i, "expected '||', found '|'")
        if c == "!":
            raise RuleSyntaxError(src, i, "expected '!=' or '!~', found '!'")
        raise self._error(i, "an operand, an operator or a parenthesis")

    def _string(self, start: int) -> _Token:
        src, n = self._src, len(self._src)
        quote = src[start]
        parts: list[str] = []
        i = chunk = start + 1
        while i < n:
            c = src[i]
            if c == "\\" and i + 1 < n and src[i + 1] in (quote, "\\"):
                parts.append(src[chunk:i])
                parts.append(src[i + 1])
                i += 2
                chunk = i
            elif c == quote:
                parts.append(src[chunk:i])
                return self._emit("string", start, i + 1, "".join(parts))
            else:
                i += 1
        raise RuleSyntaxError(
            src,
            start,
            f"unterminated string literal: expected a closing {quote!r} before end of rule",
        )

    def _number(self, start: int) -> _Token:
        src, n = self._src, len(self._src)
        i = start
        if src[i] == "-":
            i += 1
            if i >= n or src[i] not in _DIGITS:
                raise self._error(i, "a digit after '-'")
        while i < n and src[i] in _DIGITS:
            i += 1
        if i < n and src[i] == ".":
            i += 1
            if i >= n or src[i] not in _DIGITS:
                raise self._error(i, "a digit after '.'")
            while i < n and src[i] in _DIGITS:
                i += 1
            return self._emit("number", start, i, float(src[start:i]))
        return self._emit("number", start, i, _parse_int(src[start:i]))

    def _field(self, start: int) -> _Token:
        src, n = self._src, len(self._src)
        i = self._ident_end(start + 1)
        if src[start + 1 : i] != "request":
            raise RuleSyntaxError(
                src,
                start,
                "expected a field reference starting with '@request.', "
                f"found {_quote(src[start:i])}",
            )
        if i >= n or src[i] != ".":
            raise self._error(i, "'.' after '@request'")
        ns_start = i + 1
        i = self._ident_end(ns_start)
        namespace = src[ns_start:i]
        if namespace not in _NAMESPACES:
            raise self._error(
                ns_start, "one of 'auth', 'body', 'query', 'headers' or 'method' after '@request.'"
            )
        path: list[str] = []
        if namespace != "method":
            nested = namespace in ("auth", "body")
            while True:
                if i >= n or src[i] != ".":
                    if path:
                        break
                    raise self._error(i, f"'.' and a field name after '@request.{namespace}'")
                name_start = i + 1
                i = self._ident_end(name_start)
                if i == name_start:
                    raise self._error(name_start, "a field name ([A-Za-z_][A-Za-z0-9_]*)")
                path.append(src[name_start:i])
                if not nested:
                    break
        if i < n and src[i] == ".":
            raise self._error(
                i,
                f"an operator after {_quote(src[start:i])} "
                "(only '@request.auth' and '@request.body' fields can be nested)",
            )
        self._pos = i
        return _Token("field", src[start:i], start, getter=_field_getter(namespace, path))


_KEYWORDS: Final[Mapping[str, object]] = {"true": True, "false": False, "null": None}


# --------------------------------------------------------------------------- parser


@dataclass(frozen=True, slots=True)
class _Operand:
    getter: _Getter
    is_const: bool
    value: object = None


class _Parser:
    """Recursive-descent parser producing a tree of closures."""

    def __init__(self, src: str) -> None:
        self._src = src
        self._lex = _Lexer(src)
        self._depth = 0

    def _unexpected(self, tok: _Token, expected: str) -> RuleSyntaxError:
        return RuleSyntaxError(self._src, tok.pos, f"expected {expected}, found {_describe(tok)}")

    @staticmethod
    def _followers(bare: bool, closer: str) -> str:
        if bare:
            return f"a comparison operator, '&&', '||' or {closer}"
        return f"'&&', '||' or {closer}"

    def parse(self) -> _Predicate:
        pred, bare = self._or()
        tok = self._lex.peek()
        if tok.kind != "end":
            raise self._unexpected(tok, self._followers(bare, "end of rule"))
        return pred

    def _or(self) -> tuple[_Predicate, bool]:
        pred, bare = self._and()
        preds = [pred]
        while self._lex.peek().kind == "or":
            self._lex.next()
            pred, bare = self._and()
            preds.append(pred)
        return (preds[0] if len(preds) == 1 else _any_of(tuple(preds))), bare

    def _and(self) -> tuple[_Predicate, bool]:
        pred, bare = self._term()
        preds = [pred]
        while self._lex.peek().kind == "and":
            self._lex.next()
            pred, bare = self._term()
            preds.append(pred)
        return (preds[0] if len(preds) == 1 else _all_of(tuple(preds))), bare

    def _term(self) -> tuple[_Predicate, bool]:
        tok = self._lex.peek()
        if tok.kind == "(":
            self._lex.next()
            self._depth += 1
            if self._depth > _MAX_NESTING:
                raise RuleSyntaxError(
                    self._src,
                    tok.pos,
                    f"expected at most {_MAX_NESTING} levels of nested parentheses, found more",
                )
            pred, bare = self._or()
            close = self._lex.peek()
            if close.kind != ")":
                raise self._unexpected(close, self._followers(bare, "')'"))
            self._lex.next()
            self._depth -= 1
            return pred, False
        left = self._operand()
        tok = self._lex.peek()
        if tok.kind != "op":
            return _truthy_predicate(left.getter), True
        self._lex.next()
        right = self._operand()
        return _comparison(tok.text, left, right), False

    def _operand(self) -> _Operand:
        tok = self._lex.peek()
        if tok.kind in ("string", "number", "literal"):
            self._lex.next()
            return _Operand(_const(tok.value), True, tok.value)
        if tok.kind == "field" and tok.getter is not None:
            self._lex.next()
            return _Operand(tok.getter, False)
        raise self._unexpected(tok, "an operand")


# --------------------------------------------------------------------------- closures


def _const(value: object) -> _Getter:
    def get(_info: RequestInfo) -> object:
        return value

    return get


def _any_of(preds: Sequence[_Predicate]) -> _Predicate:
    def any_of(info: RequestInfo) -> bool:
        return any(pred(info) for pred in preds)

    return any_of


def _all_of(preds: Sequence[_Predicate]) -> _Predicate:
    def all_of(info: RequestInfo) -> bool:
        return all(pred(info) for pred in preds)

    return all_of


def _truthy_predicate(get: _Getter) -> _Predicate:
    def truthy(info: RequestInfo) -> bool:
        return _truthy(get(info))

    return truthy


def _comparison(op: str, left: _Operand, right: _Operand) -> _Predicate:
    lget, rget = left.getter, right.getter
    if op in ("~", "!~"):
        negate = op == "!~"
        if right.is_const:
            pattern = _to_text(right.value)
            matcher = None if pattern is None else _like_matcher(pattern)

            def like_const(info: RequestInfo) -> bool:
                value = lget(info)
                if matcher is None or value is None:
                    return negate
                text = _to_text(value)
                return negate if text is None else matcher(text) is not negate

            return like_const

        def like(info: RequestInfo) -> bool:
            return _like(lget(info), rget(info)) is not negate

        return like

    compare = _COMPARATORS[op]

    def binary(info: RequestInfo) -> bool:
        return compare(lget(info), rget(info))

    return binary


# --------------------------------------------------------------------------- field access


def _field_getter(namespace: str, path: Sequence[str]) -> _Getter:
    names = tuple(path)
    if namespace == "auth":

        def auth(info: RequestInfo) -> object:
            return _walk(info.auth, names)

        return auth
    if namespace == "body":

        def body(info: RequestInfo) -> object:
            return _walk(info.body, names)

        return body
    if namespace == "query":
        name = names[0]

        def query(info: RequestInfo) -> object:
            return _walk(info.query, (name,))

        return query
    if namespace == "headers":
        wanted = _header_key(names[0])

        def headers(info: RequestInfo) -> object:
            return _header(info.headers, wanted)

        return headers

    def method(info: RequestInfo) -> object:
        value = info.method
        return value.upper() if isinstance(value, str) else None

    return method


def _walk(value: object, path: Sequence[str]) -> object:
    for name in path:
        if not isinstance(value, Mapping):
            return None
        try:
            value = value.get(name)
        except Exception:
            return None
    return value


def _header_key(name: str) -> str:
    return name.lower().replace("-", "_")


def _header(headers: object, wanted: str) -> object:
    if not isinstance(headers, Mapping):
        return None
    try:
        for key, value in headers.items():
            if isinstance(key, str) and _header_key(key) == wanted:
                return value
    except Exception:
        return None
    return None


# --------------------------------------------------------------------------- value semantics


def _is_empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value)


def _truthy(value: object) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, str):
        return value != ""
    if isinstance(value, int | float):
        return value != 0
    return True


def _as_number(value: object) -> int | float | None:
    """Numeric view of ``value`` (numbers and numeric-looking strings), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and _NUMERIC_RE.fullmatch(value):
        if _INT_RE.fullmatch(value):
            return _parse_int(value)
        return float(value)
    return None


def _json_default(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    return str(value)


def _to_text(value: object) -> str | None:
    """String view of ``value``; ``None`` for null or when it cannot be rendered."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    try:
        if isinstance(value, int):
            return str(int(value))
        if isinstance(value, float):
            return repr(value)
        if isinstance(value, Mapping | list | tuple):
            return json.dumps(
                value, separators=(",", ":"), ensure_ascii=False, default=_json_default
            )
        return str(value)
    except Exception:
        return None


def _bool_text(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return None


def _equals(left: object, right: object) -> bool:
    left_empty, right_empty = _is_empty(left), _is_empty(right)
    if left_empty or right_empty:
        return left_empty and right_empty
    if isinstance(left, bool) or isinstance(right, bool):
        text = _bool_text(left)
        return text is not None and text == _bool_text(right)
    left_num, right_num = _as_number(left), _as_number(right)
    if left_num is not None and right_num is not None:
        return left_num == right_num
    text = _to_text(left)
    return text is not None and text == _to_text(right)


def _not_equals(left: object, right: object) -> bool:
    return not _equals(left, right)


def _ordering(
    cmp: Callable[[Any, Any], bool], empty_result: bool
) -> Callable[[object, object], bool]:
    def compare(left: object, right: object) -> bool:
        if _is_empty(left) and _is_empty(right):
            return empty_result
        if left is None or right is None:
            return False
        left_num, right_num = _as_number(left), _as_number(right)
        if left_num is not None and right_num is not None:
            return cmp(left_num, right_num)
        if isinstance(left, str) and isinstance(right, str):
            return cmp(left, right)
        return False

    return compare


_COMPARATORS: Final[Mapping[str, Callable[[object, object], bool]]] = {
    "=": _equals,
    "!=": _not_equals,
    "<": _ordering(operator.lt, False),
    "<=": _ordering(operator.le, True),
    ">": _ordering(operator.gt, False),
    ">=": _ordering(operator.ge, True),
}


# --------------------------------------------------------------------------- LIKE


_Segment = tuple[str | None, ...]  # None = "_" (any single character)


def _has_unescaped_percent(pattern: str) -> bool:
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
        elif c == "%":
            return True
        else:
            i += 1
    return False


def _split_like(pattern: str) -> list[_Segment]:
    """Split a LIKE pattern at unescaped ``%`` into case-folded segments."""
    segments: list[_Segment] = []
    current: list[str | None] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            current.extend(pattern[i + 1].casefold())
            i += 2
            continue
        if c == "%":
            segments.append(tuple(current))
            current = []
        elif c == "_":
            current.append(None)
        else:
            current.extend(c.casefold())
        i += 1
    segments.append(tuple(current))
    return segments


def _match_at(text: str, pos: int, segment: _Segment) -> bool:
    if pos < 0 or pos + len(segment) > len(text):
        return False
    for offset, char in enumerate(segment):
        if char is not None and text[pos + offset] != char:
            return False
    return True


def _find(text: str, start: int, end: int, segment: _Segment) -> int:
    """Leftmost position ``p`` in ``[start, end - len(segment)]`` where ``segment`` matches."""
    if None not in segment:
        return text.find("".join([c for c in segment if c is not None]), start, end)
    for pos in range(start, end - len(segment) + 1):
        if _match_at(text, pos, segment):
            return pos
    return -1


@lru_cache(maxsize=256)
def _like_matcher(pattern: str) -> Callable[[str], bool]:
    """Build a case-insensitive matcher for the right-hand side of ``~``.

    Matching is O(len(text) * len(pattern)) in the worst case (no backtracking
    blow-up), so request-controlled patterns are safe.
    """
    if not _has_unescaped_percent(pattern):
        needle = pattern.replace("\\%", "%").casefold()

        def contains(text: str) -> bool:
            return needle in text.casefold()

        return contains

    segments = _split_like(pattern)
    first, middle, last = segments[0], segments[1:-1], segments[-1]

    def like(text: str) -> bool:
        text = text.casefold()
        start, end = len(first), len(text) - len(last)
        if start > end or not _match_at(text, 0, first) or not _match_at(text, end, last):
            return False
        for segment in middle:
            if not segment:
                continue
            found = _find(text, start, end, segment)
            if found < 0:
                return False
            start = found + len(segment)
        return True

    return like


def _like(left: object, right: object) -> bool:
    if left is None or right is None:
        return False
    text, pattern = _to_text(left), _to_text(right)
    if text is None or pattern is None:
        return False
    return _like_matcher(pattern)(text)
