"""Unit tests for pocketjobs.apis.rules (PocketBase-style access-rule expressions)."""

from __future__ import annotations

import ast
import pickle
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pocketjobs.apis.rules import RequestInfo, Rule, RuleSyntaxError, compile_rule

GUEST = RequestInfo()
USER = RequestInfo(
    auth={"id": "u1", "email": "Bob@Example.com", "collectionName": "users", "verified": True},
    body={"topic": "email:send"},
)
SUPERUSER = RequestInfo(
    auth={"id": "s1", "email": "root@corp.io", "collectionName": "_superusers"},
)


def ev(rule: str, info: RequestInfo = GUEST) -> bool:
    return compile_rule(rule).evaluate(info)


def body(**kwargs: Any) -> RequestInfo:
    return RequestInfo(body=kwargs)


# --------------------------------------------------------------------------- SPEC examples


def test_spec_authenticated_only() -> None:
    rule = compile_rule('@request.auth.id != ""')
    assert rule.evaluate(GUEST) is False
    assert rule.evaluate(USER) is True
    assert rule.evaluate(SUPERUSER) is True


def test_spec_email_domain() -> None:
    rule = compile_rule('@request.auth.email ~ "@example.com"')
    assert rule.evaluate(GUEST) is False
    assert rule.evaluate(USER) is True  # case-insensitive
    assert rule.evaluate(SUPERUSER) is False


def test_spec_topic_and_authenticated() -> None:
    rule = compile_rule('@request.body.topic = "email:send" && @request.auth.id != ""')
    assert rule.evaluate(USER) is True
    assert rule.evaluate(RequestInfo(body={"topic": "email:send"})) is False  # guest
    assert rule.evaluate(RequestInfo(auth=USER.auth, body={"topic": "sms:send"})) is False
    assert rule.evaluate(RequestInfo(auth=USER.auth, body=None)) is False


def test_spec_superusers_only() -> None:
    rule = compile_rule('@request.auth.collectionName = "_superusers"')
    assert rule.evaluate(SUPERUSER) is True
    assert rule.evaluate(USER) is False
    assert rule.evaluate(GUEST) is False


def test_guest_auth_fields_are_empty() -> None:
    assert ev('@request.auth.id = ""') is True
    assert ev('@request.auth.id != ""') is False
    assert ev("@request.auth.id = null") is True
    assert ev('@request.auth.id = ""', USER) is False


# --------------------------------------------------------------------------- precedence


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("false && false || true", True),  # (false && false) || true
        ("true || false && false", True),  # true || (false && false)
        ("(true || false) && false", False),
        ("false && (false || true)", False),
        ("true && true && false", False),
        ("false || false || true", True),
        ("((((true))))", True),
        ("(false) || (((true)) && (true))", True),
        ("1 = 1 && 2 = 2 || 1 = 2", True),
        ("1 = 2 || 2 = 2 && 3 = 4", False),
        ("(1 = 2 || 2 = 2) && 3 = 3", True),
    ],
)
def test_precedence_and_parentheses(rule: str, expected: bool) -> None:
    assert ev(rule) is expected


def test_short_circuit_and_or() -> None:
    # Right-hand sides that would be false/true prove nothing; check laziness via a body
    # mapping that records lookups.
    seen: list[str] = []

    class Recording(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            seen.append(key)
            return 1

        def __iter__(self) -> Iterator[str]:
            return iter(())

        def __len__(self) -> int:
            return 0

    info = RequestInfo(body=Recording())
    assert compile_rule("false && @request.body.a = 1").evaluate(info) is False
    assert compile_rule("true || @request.body.b = 1").evaluate(info) is True
    assert seen == []
    assert compile_rule("true && @request.body.c = 1").evaluate(info) is True
    assert seen == ["c"]


# --------------------------------------------------------------------------- operators


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("1 = 1", True),
        ("1 = 2", False),
        ('"a" = "a"', True),
        ("'a' = \"a\"", True),
        ('"a" = "A"', False),
        ("1 != 2", True),
        ("1 != 1", False),
        ("2 > 1", True),
        ("1 > 1", False),
        ("2 >= 2", True),
        ("1 >= 2", False),
        ("1 < 2", True),
        ("2 < 2", False),
        ("2 <= 2", True),
        ("3 <= 2", False),
        ('"abc" ~ "B"', True),
        ('"abc" ~ "x"', False),
        ('"abc" !~ "B"', False),
        ('"abc" !~ "x"', True),
        ("-1.5 < -1", True),
        ("1.5 = 1.50", True),
        ("0 = -0", True),
    ],
)
def test_each_operator_on_literals(rule: str, expected: bool) -> None:
    assert ev(rule) is expected


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ('"10" > "9"', True),  # both numeric strings: numeric comparison
        ('"10a" > "9a"', False),  # plain strings: code-point comparison
        ('"abc" < "abd"', True),
        ('"B" < "a"', True),
        ('"1.0" = 1', True),
        ('"01" = "1"', True),
        ('"1e3" = 1000', True),
        ('" 1" = 1', False),  # whitespace makes it non-numeric
        ('1 < "abc"', False),  # number vs non-numeric string: no ordering
        ('1 = "abc"', False),
        ('"abc" = "abc"', True),
        ("1 = 1.0", True),
        ("2 > 1.999", True),
    ],
)
def test_numeric_vs_string_comparison(rule: str, expected: bool) -> None:
    assert ev(rule) is expected


def test_query_values_compare_numerically() -> None:
    info = RequestInfo(query={"n": "10", "s": "abc"})
    assert ev("@request.query.n > 9", info) is True
    assert ev("@request.query.n = 10.0", info) is True
    assert ev('@request.query.n = "10"', info) is True
    assert ev("@request.query.n < 9.5", info) is False
    assert ev("@request.query.s > 1", info) is False
    assert ev('@request.query.s >= "abc"', info) is True
    assert ev('@request.query.missing = ""', info) is True
    assert ev("@request.query.missing > 0", info) is False


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("true = true", True),
        ("true = false", False),
        ('true = "true"', True),
        ('"false" = false', True),
        ('true = "TRUE"', False),
        ("true = 1", False),  # booleans are not numbers
        ("false = 0", False),
        ('false = ""', False),
        ("false = null", False),
        ("true != false", True),
        ("true > false", False),  # no ordering for booleans
    ],
)
def test_booleans(rule: str, expected: bool) -> None:
    assert ev(rule) is expected


def test_boolean_fields() -> None:
    info = RequestInfo(body={"flag": True}, query={"flag": "true"})
    assert ev("@request.body.flag = true", info) is True
    assert ev("@request.query.flag = true", info) is True
    assert ev("@request.body.flag = @request.query.flag", info) is True
    assert ev("@request.body.flag != false", info) is True


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("null = null", True),
        ('null = ""', True),
        ('"" = null', True),
        ('null != ""', False),
        ("null != null", False),
        ("null = 0", False),
        ('null = "null"', False),
        ("null != 0", True),
        ("null < 1", False),
        ("null > 1", False),
        ('null > "a"', False),
        ('null < "a"', False),
        ('null <= ""', True),
        ('null >= ""', True),
        ('null < ""', False),
        ("null >= null", True),
        ('"" <= ""', True),
        ('"" < "a"', True),
        ('null ~ "a"', False),
        ('null !~ "a"', True),
        ('"a" ~ null', False),
        ('"a" !~ null', True),
        ('null ~ ""', False),
    ],
)
def test_nulls(rule: str, expected: bool) -> None:
    assert ev(rule) is expected


def test_objects_and_arrays_compare_as_compact_json() -> None:
    info = body(tags=["a", "b"], obj={"a": 1, "b": [True, None]})
    assert ev('@request.body.tags = \'["a","b"]\'', info) is True
    assert ev('@request.body.obj = \'{"a":1,"b":[true,null]}\'', info) is True
    assert ev("@request.body.tags ~ '\"b\"'", info) is True
    assert ev("@request.body.tags = @request.body.tags", info) is True
    assert ev("@request.body.tags > 'a'", info) is False


# --------------------------------------------------------------------------- truthiness


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("true", True),
        ("false", False),
        ("null", False),
        ('""', False),
        ("''", False),
        ('"x"', True),
        ('"false"', True),  # only the empty string is a false string
        ("0", False),
        ("0.0", False),
        ("-0", False),
        ("1", True),
        ("-2.5", True),
    ],
)
def test_bare_operand_truthiness(rule: str, expected: bool) -> None:
    assert ev(rule) is expected


def test_bare_field_truthiness() -> None:
    assert ev("@request.auth.verified", USER) is True
    assert ev("@request.auth.verified", GUEST) is False
    assert ev("@request.auth.verified", RequestInfo(auth={"verified": False})) is False
    assert ev("@request.body.n", body(n=0)) is False
    assert ev("@request.body.n", body(n=3)) is True
    assert ev("@request.body.items", body(items=[])) is True
    assert ev("@request.auth.verified && @request.auth.id != ''", USER) is True


# --------------------------------------------------------------------------- LIKE


@pytest.mark.parametrize(
    ("left", "pattern", "expected"),
    [
        ("hello world", "o w", True),
        ("hello world", "HELLO", True),
        ("HELLO WORLD", "lo wo", True),
        ("hello world", "", True),
        ("hello world", "h%d", True),  # with % the pattern is anchored
        ("hello world", "h%o", False),
        ("hello world", "%world", True),
        ("hello world", "%hello", False),
        ("hello world", "hello%", True),
        ("hello world", "%", True),
        ("", "%", True),
        ("hello world", "h_llo%", True),
        ("hello world", "h_lo%", False),
        ("hello world", "%o_w%", True),
        ("hello world", "%l%l%l%", True),
        ("hello world", "%l%l%l%l%", False),
        ("abc", "___", False),  # no % -> literal substring, '_' is literal
        ("abc", "___%", True),
        ("abc", "__%", True),
        ("abc", "%____", False),
        ("a_b", "_", True),
        ("ab", "_", False),
        ("50%", "50\\%", True),  # \% is a literal percent in contains mode
        ("50 percent", "50\\%", False),
        ("a%b", "a\\%%", True),  # \% is a literal percent in pattern mode
        ("ab", "a\\%%", False),
        ("a_c", "a\\_%", True),
        ("abc", "a\\_%", False),
        ("ÄBC", "äb", True),
        ("Straße", "STRASSE", True),
        ("abcabc", "%abc", True),
        ("aXbXc", "a%b%c", True),
        ("acb", "a%b%c", False),
    ],
)
def test_like(left: str, pattern: str, expected: bool) -> None:
    info = RequestInfo(body={"left": left, "pattern": pattern})
    # dynamic right-hand side
    assert ev("@request.body.left ~ @request.body.pattern", info) is expected
    assert ev("@request.body.left !~ @request.body.pattern", info) is not expected
    # literal right-hand side (precompiled matcher)
    escaped = pattern.replace("\\", "\\\\").replace('"', '\\"')
    assert ev(f'@request.body.left ~ "{escaped}"', info) is expected
    assert ev(f'@request.body.left !~ "{escaped}"', info) is not expected


def test_like_converts_non_strings() -> None:
    info = body(n=123, flag=True, tags=["red", "blue"])
    assert ev("@request.body.n ~ 12", info) is True
    assert ev('@request.body.n ~ "2%"', info) is False
    assert ev('@request.body.n ~ "%3"', info) is True
    assert ev('@request.body.flag ~ "TRU"', info) is True
    assert ev('@request.body.tags ~ "blue"', info) is True
    assert ev('@request.body.missing ~ ""', info) is False
    assert ev('@request.body.missing !~ "x"', info) is True


def test_like_is_not_exponential() -> None:
    text = "ab" * 5000
    pattern = "%a%b%a%b%a%b%a%b%a%b%c"
    info = RequestInfo(body={"t": text}, query={"q": pattern})
    start = time.perf_counter()
    assert ev("@request.body.t ~ @request.query.q", info) is False
    assert ev(f'@request.body.t ~ "{pattern}"', info) is False
    assert time.perf_counter() - start < 5


# --------------------------------------------------------------------------- fields


def test_nested_body_path() -> None:
    info = body(payload={"kind": "k", "deep": {"x": 1, "list": [1, 2]}})
    assert ev('@request.body.payload.kind = "k"', info) is True
    assert ev("@request.body.payload.deep.x = 1", info) is True
    assert ev("@request.body.payload.deep.x.y = null", info) is True  # not an object
    assert ev('@request.body.payload.nope.x = ""', info) is True
    assert ev('@request.body.payload.deep.list = "[1,2]"', info) is True
    assert ev('@request.body.payload = \'{"kind":"k","deep":{"x":1,"list":[1,2]}}\'', info)


@pytest.mark.parametrize("value", [None, [], ["payload"], "payload", 42, True])
def test_body_not_an_object_resolves_to_null(value: Any) -> None:
    info = RequestInfo(body=value)
    assert ev("@request.body.payload = null", info) is True
    assert ev("@request.body.payload.kind = null", info) is True


def test_nested_auth_path() -> None:
    info = RequestInfo(auth={"id": "u", "profile": {"age": 21, "name": "Ann"}})
    assert ev("@request.auth.profile.age >= 18", info) is True
    assert ev('@request.auth.profile.name ~ "an"', info) is True
    assert ev("@request.auth.profile.age >= 18", GUEST) is False


def test_headers_normalisation() -> None:
    info = RequestInfo(headers={"X-Token": "abc", "Content-Type": "application/json"})
    assert ev('@request.headers.x_token = "abc"', info) is True
    assert ev('@request.headers.X_TOKEN = "abc"', info) is True
    assert ev('@request.headers.content_type ~ "json"', info) is True
    assert ev('@request.headers.authorization = ""', info) is True
    assert ev('@request.headers.x_token = "abc"', RequestInfo(headers={"x_token": "abc"}))
    assert ev('@request.headers.x_token = "abc"', RequestInfo(headers={"X_TOKEN": "abc"}))
    assert ev('@request.headers.x_token = "abc"', GUEST) is False


def test_header_numeric_value() -> None:
    info = RequestInfo(headers={"X-Retry": "3"})
    assert ev("@request.headers.x_retry < 5", info) is True
    assert ev("@request.headers.x_retry = 3.0", info) is True


def test_method() -> None:
    assert ev('@request.method = "GET"') is True
    assert ev('@request.method = "POST"', RequestInfo(method="POST")) is True
    assert ev('@request.method = "POST"', RequestInfo(method="post")) is True  # upper-cased
    assert ev('@request.method != "GET" && @request.method != "HEAD"') is False
    assert ev('@request.method ~ "P"', RequestInfo(method="PATCH")) is True


def test_fields_on_both_sides() -> None:
    info = RequestInfo(auth={"id": "u1"}, body={"owner": "u1", "other": "u2"})
    assert ev("@request.body.owner = @request.auth.id", info) is True
    assert ev("@request.body.other = @request.auth.id", info) is False
    guest = RequestInfo(body={"owner": "u1"})
    assert ev("@request.body.owner = @request.auth.id", guest) is False
    # both sides missing: null = null (why rules usually also check @request.auth.id != "")
    assert ev("@request.body.owner = @request.auth.id", GUEST) is True
    assert ev('@request.auth.id != "" && @request.body.owner = @request.auth.id', GUEST) is False


# --------------------------------------------------------------------------- lexical details


def test_string_escapes() -> None:
    assert ev('"a\\"b" = \'a"b\'') is True
    assert ev("'it\\'s' = \"it's\"") is True
    assert ev('@request.body.s = "back\\\\slash"', body(s="back\\slash")) is True
    # a backslash before any other character is kept literally
    assert ev('@request.body.s = "a\\nb"', body(s="a\\nb")) is True
    assert ev('@request.body.s = "a\\\\nb"', body(s="a\\nb")) is True


def test_whitespace_and_comments() -> None:
    rule = """
        // only verified users
        @request.auth.verified = true   // comment after a term
        &&
        (
            @request.method = "POST" // creating
            ||
            @request.method = 'PATCH'
        )   // trailing comment without newline"""
    assert ev(rule, RequestInfo(auth={"verified": True}, method="POST")) is True
    assert ev(rule, RequestInfo(auth={"verified": True}, method="GET")) is False
    assert ev('"a//b" = "a//b"') is True  # '//' inside a string is not a comment
    assert ev("1=1&&2>=2||false") is True
    assert ev("true // && false") is True


def test_huge_number_literal() -> None:
    big = "9" * 5000
    assert ev(f"{big} > 1") is True
    assert ev(f"@request.query.n < {big}", RequestInfo(query={"n": "5"})) is True
    assert ev("@request.query.n > 1", RequestInfo(query={"n": big})) is True


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("rule", "position", "fragment"),
    [
        ("", 0, "expected an operand, found end of rule"),
        ("   ", 3, "expected an operand, found end of rule"),
        ("// only a comment", 17, "expected an operand, found end of rule"),
        ("@request.auth.id=&&", 17, "expected an operand, found '&&'"),
        ('@request.auth.id != "" && && true', 26, "expected an operand, found '&&'"),
        ("@request.auth.id != ", 20, "expected an operand, found end of rule"),
        ("&& true", 0, "expected an operand, found '&&'"),
        ("true &&", 7, "expected an operand, found end of rule"),
        ("true || || false", 8, "expected an operand, found '||'"),
        ("= 1", 0, "expected an operand, found '='"),
        ("1 = = 1", 4, "expected an operand, found '='"),
        ("1 == 1", 3, "expected an operand, found '='"),
        ("1 = (1)", 4, "expected an operand, found '('"),
        ("()", 1, "expected an operand, found ')'"),
        ("abc = 1", 0, "expected an operand, found 'abc'"),
        ("TRUE", 0, "expected an operand, found 'TRUE'"),
        ("1 = abc", 4, "found 'abc'"),
        ("@collection.x = 1", 0, "starting with '@request.', found '@collection'"),
        ("@requestx.id = 1", 0, "found '@requestx'"),
        ("@ = 1", 0, "found '@'"),
        ("@request = 1", 8, "expected '.' after '@request', found ' '"),
        ("@request.foo = 1", 9, "'method' after '@request.', found 'foo'"),
        ("@request.context = 1", 9, "found 'context'"),
        ("@request.auth = 1", 13, "expected '.' and a field name after '@request.auth'"),
        ("@request.auth. = 1", 14, "expected a field name"),
        ("@request.auth.1x = 1", 14, "expected a field name"),
        ("@request.body.a..b = 1", 16, "expected a field name ([A-Za-z_][A-Za-z0-9_]*), found '.'"),
        ("@request.query.a.b = 1", 16, "found '.'"),
        ("@request.headers.a.b = 1", 18, "found '.'"),
        ("@request.method.x = 1", 15, "found '.'"),
        ("@request.query = 1", 14, "after '@request.query'"),
        ('@request.auth.id = "abc', 19, "unterminated string literal: expected a closing '\"'"),
        ("'abc\\'", 0, 'expected a closing "\'" before end of rule'),
        ('"abc\\\\\\"', 0, "unterminated string literal"),
        ("(true", 5, "expected a comparison operator, '&&', '||' or ')', found end of rule"),
        ("((1 = 1)", 8, "expected '&&', '||' or ')', found end of rule"),
        ("true)", 4, "or end of rule, found ')'"),
        ("(1 = 1))", 7, "expected '&&', '||' or end of rule, found ')'"),
        ("true false", 5, "expected a comparison operator, '&&', '||' or end of rule"),
        ("1 = 1 = 1", 6, "expected '&&', '||' or end of rule, found '='"),
        ('1 = 1 "x"', 6, "found '\"x\"'"),
        ("1 & 1", 2, "expected '&&', found '&'"),
        ("1 | 1", 2, "expected '||', found '|'"),
        ("1 ! 1", 2, "expected '!=' or '!~', found '!'"),
        ("1 # 1", 2, "found '#'"),
        ("1 / 2", 2, "found '/'"),
        ("1.", 2, "expected a digit after '.', found end of rule"),
        ("1.x = 1", 2, "expected a digit after '.', found 'x'"),
        ("- 1", 1, "expected a digit after '-', found ' '"),
        ("1e3 = 1000", 1, "found 'e3'"),
        ("@request.auth.id ?= 1", 17, "found '?'"),
        ("@request.auth.id:isset = true", 16, "found ':'"),
        ("@request.auth.id = true &&", 26, "expected an operand, found end of rule"),
    ],
)
def test_malformed_rules(rule: str, position: int, fragment: str) -> None:
    with pytest.raises(RuleSyntaxError) as info:
        compile_rule(rule)
    err = info.value
    assert err.position == position, str(err)
    assert err.rule == rule
    assert str(err).startswith(f"rule error at position {position}: "), str(err)
    assert fragment in str(err), str(err)
    assert str(err) == f"rule error at position {position}: {err.detail}"


def test_spec_example_error_message() -> None:
    with pytest.raises(
        RuleSyntaxError, match=r"^rule error at position 17: expected an operand, found '&&'$"
    ):
        compile_rule("@request.auth.id=&&")


def test_nesting_limit() -> None:
    assert ev("(" * 64 + "true" + ")" * 64) is True
    with pytest.raises(RuleSyntaxError) as info:
        compile_rule("(" * 65 + "true" + ")" * 65)
    assert info.value.position == 64
    assert "nested parentheses" in str(info.value)
    # long flat chains are fine (no recursion per operand)
    assert ev(" && ".join(["true"] * 5000)) is True
    assert ev(" || ".join(["false"] * 5000) + " || true") is True


def test_leftmost_error_wins() -> None:
    # the parse error at '&&' comes before the unterminated string
    with pytest.raises(RuleSyntaxError) as info:
        compile_rule('&& "unterminated')
    assert info.value.position == 0


def test_rule_syntax_error_is_value_error_and_picklable() -> None:
    with pytest.raises(ValueError, match="position 0") as info:
        compile_rule("")
    err = info.value
    assert isinstance(err, RuleSyntaxError)
    clone = pickle.loads(pickle.dumps(err))
    assert isinstance(clone, RuleSyntaxError)
    assert (clone.rule, clone.position, str(clone)) == (err.rule, err.position, str(err))


# --------------------------------------------------------------------------- Rule object


def test_rule_object() -> None:
    rule = compile_rule("true")
    assert isinstance(rule, Rule)
    assert rule.source == "true"
    assert rule == Rule("true")
    assert hash(rule) == hash(Rule("true"))
    assert rule != Rule("false")
    assert repr(rule) == "Rule('true')"
    with pytest.raises(TypeError):
        compile_rule(b"true")  # type: ignore[arg-type]


def test_request_info_defaults() -> None:
    info = RequestInfo()
    assert info.auth is None
    assert info.body is None
    assert dict(info.query) == {}
    assert dict(info.headers) == {}
    assert info.method == "GET"
    assert RequestInfo().query is not info.query


# --------------------------------------------------------------------------- robustness


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    __repr__ = __str__


class ExplodingMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("boom")

    def __len__(self) -> int:
        raise RuntimeError("boom")


def _circular() -> list[Any]:
    items: list[Any] = []
    items.append(items)
    return items


WEIRD_VALUES: list[Any] = [
    b"bytes",
    bytearray(b"x"),
    {1, 2},
    (1, "a"),
    10**5000,
    float("nan"),
    float("inf"),
    -float("inf"),
    Unprintable(),
    ExplodingMapping(),
    _circular(),
    {"k": Unprintable()},
    {(1, 2): "tuple key"},
    object(),
    complex(1, 2),
]

ALL_OPS = ["=", "!=", "<", "<=", ">", ">=", "~", "!~"]


@pytest.mark.parametrize("value", WEIRD_VALUES, ids=lambda v: type(v).__name__)
def test_weird_values_never_raise(value: Any) -> None:
    infos = [
        RequestInfo(body=value),
        RequestInfo(body={"x": value}),
        RequestInfo(auth={"x": value}),
        RequestInfo(query={"x": value}),
        RequestInfo(headers={"x": value}),
        RequestInfo(auth=value, body=value, query=value, headers=value, method=value),
    ]
    rights = ['"a"', "1", "null", "true", '"%a%"', "@request.body.x", "@request.query.x"]
    for info in infos:
        for op in ALL_OPS:
            for right in rights:
                for left in ("@request.body.x", "@request.auth.x", "@request.headers.x"):
                    rule = compile_rule(f"{left} {op} {right}")
                    assert isinstance(rule._predicate(info), bool)
                    assert isinstance(rule.evaluate(info), bool)
        assert isinstance(compile_rule("@request.body.x").evaluate(info), bool)
        assert isinstance(compile_rule("@request.method = 'GET'").evaluate(info), bool)


def test_evaluate_fails_closed_on_garbage_info() -> None:
    assert compile_rule('@request.auth.id = ""').evaluate(None) is False  # type: ignore[arg-type]
    assert compile_rule("true").evaluate(None) is True  # type: ignore[arg-type]


# --------------------------------------------------------------------------- hypothesis

NAMES = ["id", "email", "n", "s", "flag", "payload", "kind", "x_token", "verified", "tags"]
name_st = st.one_of(
    st.sampled_from(NAMES), st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
)
path_st = st.lists(name_st, min_size=1, max_size=3).map(".".join)

field_st = st.one_of(
    path_st.map(lambda p: f"@request.auth.{p}"),
    path_st.map(lambda p: f"@request.body.{p}"),
    name_st.map(lambda n: f"@request.query.{n}"),
    name_st.map(lambda n: f"@request.headers.{n}"),
    st.just("@request.method"),
)


def quote_string(value: str, quote: str) -> str:
    return quote + value.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


string_values = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["", "0", "1", "1.5", "-2", "true", "false", "a%", "%b%", "_", "GET", "u1"]),
)
string_lit_st = st.builds(quote_string, string_values, st.sampled_from(['"', "'"]))
int_lit_st = st.integers(-(10**6), 10**6).map(str)
float_lit_st = st.builds(
    lambda i, d: f"{i}.{d}", st.integers(-1000, 1000), st.from_regex(r"[0-9]{1,3}", fullmatch=True)
)
operand_st = st.one_of(
    string_lit_st,
    int_lit_st,
    float_lit_st,
    st.sampled_from(["true", "false", "null"]),
    field_st,
)
op_st = st.sampled_from(ALL_OPS)
ws_st = st.sampled_from(["", " ", "  ", "\n", "\t", " // note\n"])
comparison_st = st.builds(
    lambda left, ws1, op, ws2, right: f"{left}{ws1}{op}{ws2}{right}",
    operand_st,
    ws_st,
    op_st,
    ws_st,
    operand_st,
)
leaf_src_st = st.one_of(comparison_st, operand_st)


@dataclass(frozen=True)
class Leaf:
    src: str


@dataclass(frozen=True)
class And:
    left: Node
    right: Node


@dataclass(frozen=True)
class Or:
    left: Node
    right: Node


@dataclass(frozen=True)
class Group:
    inner: Node


Node = Leaf | And | Or | Group

tree_st: st.SearchStrategy[Node] = st.recursive(
    leaf_src_st.map(Leaf),
    lambda kids: st.one_of(
        st.builds(And, kids, kids),
        st.builds(Or, kids, kids),
        st.builds(Group, kids),
    ),
    max_leaves=10,
)


def render(node: Node) -> str:
    """Render with only the explicit groups (precedence decides the rest)."""
    if isinstance(node, Leaf):
        return node.src
    if isinstance(node, And):
        return f"{render(node.left)} && {render(node.right)}"
    if isinstance(node, Or):
        return f"{render(node.left)} || {render(node.right)}"
    return f"({render(node.inner)})"


def render_full(node: Node) -> str:
    """Render fully parenthesised so the text has exactly the tree's structure."""
    if isinstance(node, Leaf):
        return node.src
    if isinstance(node, And):
        return f"({render_full(node.left)}) && ({render_full(node.right)})"
    if isinstance(node, Or):
        return f"({render_full(node.left)}) || ({render_full(node.right)})"
    return f"({render_full(node.inner)})"


def model(node: Node, info: RequestInfo) -> bool:
    """Reference semantics of a tree, built from the leaves' own evaluations."""
    if isinstance(node, Leaf):
        return ev(node.src, info)
    if isinstance(node, And):
        return model(node.left, info) and model(node.right, info)
    if isinstance(node, Or):
        return model(node.left, info) or model(node.right, info)
    return model(node.inner, info)


def depth(node: Node) -> int:
    if isinstance(node, Leaf):
        return 0
    if isinstance(node, Group):
        return 1 + depth(node.inner)
    return 1 + max(depth(node.left), depth(node.right))


json_st = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=6),
        st.sampled_from(["", "0", "1", "1.5", "-2", "true", "false", "abc%", "x_y", "u1"]),
    ),
    lambda kids: st.one_of(
        st.lists(kids, max_size=3),
        st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=3)), kids, max_size=4),
    ),
    max_leaves=8,
)
any_value_st = st.one_of(json_st, st.sampled_from(WEIRD_VALUES))
str_map_st = st.dictionaries(
    st.one_of(st.sampled_from([*NAMES, "X-Token", "X_TOKEN", "x-token"]), st.text(max_size=4)),
    st.one_of(st.text(max_size=5), st.sampled_from(["", "0", "1", "10", "2.5", "true"])),
    max_size=4,
)
request_st = st.builds(
    RequestInfo,
    auth=st.one_of(
        st.none(),
        st.dictionaries(st.sampled_from(NAMES), any_value_st, max_size=5),
    ),
    body=st.one_of(
        st.dictionaries(st.sampled_from(NAMES), any_value_st, max_size=5),
        any_value_st,
    ),
    query=str_map_st,
    headers=str_map_st,
    method=st.sampled_from(["GET", "POST", "post", "DELETE", ""]),
)

FRAGMENTS = [
    "@request.auth.id",
    "@request.body.payload.kind",
    "@request.query.n",
    "@request.headers.x_token",
    "@request.method",
    "@request.",
    "@request",
    "@collection.x",
    "@",
    ".",
    "&&",
    "||",
    "&",
    "|",
    "(",
    ")",
    "=",
    "!=",
    "!",
    "~",
    "!~",
    ">",
    ">=",
    "<",
    "<=",
    '"',
    "'",
    '"abc"',
    "'x'",
    "\\",
    "1",
    "-",
    "-2.5",
    "0.",
    "true",
    "false",
    "null",
    "abc",
    " ",
    "\n",
    "//",
    "%",
    "_",
    "#",
    ":",
]
grammarish_text_st = st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join)


def _check_error(text: str, err: RuleSyntaxError) -> None:
    assert err.rule == text
    assert 0 <= err.position <= len(text)
    assert str(err).startswith(f"rule error at position {err.position}: ")
    _head, sep, found = str(err).rpartition(", found ")
    if sep and found != "end of rule" and found != "more":
        shown = ast.literal_eval(found)
        assert isinstance(shown, str)
        if not shown.endswith("..."):
            assert text.startswith(shown, err.position), (text, str(err))
    elif found == "end of rule":
        assert err.position == len(text)


@given(st.one_of(st.text(), grammarish_text_st))
def test_random_text_compiles_or_raises_rule_syntax_error(text: str) -> None:
    try:
        rule = compile_rule(text)
    except RuleSyntaxError as err:
        _check_error(text, err)
    else:
        assert isinstance(rule.evaluate(GUEST), bool)
        assert isinstance(rule.evaluate(USER), bool)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(tree_st, request_st)
def test_well_formed_rules_compile_and_evaluate(tree: Node, info: RequestInfo) -> None:
    assume(depth(tree) <= 60)
    rule = compile_rule(render(tree))
    assert isinstance(rule._predicate(info), bool)  # no internal error swallowed
    assert isinstance(rule.evaluate(info), bool)
    full = compile_rule(render_full(tree))
    assert full.evaluate(info) is model(tree, info)


@given(leaf_src_st, leaf_src_st, request_st)
def test_and_or_algebra(a: str, b: str, info: RequestInfo) -> None:
    va, vb = ev(a, info), ev(b, info)
    assert ev(f"({a}) && ({b})", info) is (va and vb)
    assert ev(f"({a}) || ({b})", info) is (va or vb)
    assert ev(f"{a} && {b}", info) is ev(f"{b} && {a}", info)
    assert ev(f"{a} || {b}", info) is ev(f"{b} || {a}", info)
    assert ev(f"({a}) && (({b}) || ({a}))", info) is va  # absorption
    assert ev(f"({a}) || (({b}) && ({a}))", info) is va


@given(operand_st, operand_st, request_st)
def test_comparison_algebra(x: str, y: str, info: RequestInfo) -> None:
    eq = ev(f"{x} = {y}", info)
    assert ev(f"{x} != {y}", info) is not eq
    assert ev(f"{y} = {x}", info) is eq  # symmetric
    assert ev(f"{x} !~ {y}", info) is not ev(f"{x} ~ {y}", info)
    assert ev(f"{x} < {y}", info) is ev(f"{y} > {x}", info)
    assert ev(f"{x} <= {y}", info) is ev(f"{y} >= {x}", info)
    assert ev(f"{x} = {y} || {x} != {y}", info) is True
    assert ev(f"{x} = {y} && {x} != {y}", info) is False
    assert ev(f"{x} = {x}", info) is not ev(f"{x} != {x}", info)


@given(
    st.lists(leaf_src_st, min_size=1, max_size=6),
    st.lists(st.sampled_from(["&&", "||"]), min_size=5, max_size=5),
    request_st,
)
def test_and_binds_tighter_than_or(leaves: list[str], ops: list[str], info: RequestInfo) -> None:
    ops = ops[: len(leaves) - 1]
    text = leaves[0] + "".join(f" {op} {leaf}" for op, leaf in zip(ops, leaves[1:], strict=True))
    values = [ev(leaf, info) for leaf in leaves]
    groups: list[list[bool]] = [[values[0]]]
    for op, value in zip(ops, values[1:], strict=True):
        if op == "||":
            groups.append([value])
        else:
            groups[-1].append(value)
    assert ev(text, info) is any(all(group) for group in groups)


@given(string_values, st.sampled_from(['"', "'"]))
def test_string_literal_round_trip(value: str, quote: str) -> None:
    literal = quote_string(value, quote)
    assert ev(f"@request.body.s = {literal}", body(s=value)) is True
    if "%" not in value and "\\" not in value:  # plain "contains" mode
        assert ev(f"@request.body.s ~ {literal}", body(s=f"<{value.upper()}>")) is True


@given(st.integers(-(10**9), 10**9), st.integers(-(10**9), 10**9))
def test_numeric_strings_order_like_numbers(a: int, b: int) -> None:
    info = RequestInfo(query={"a": str(a), "b": str(b)})
    assert ev("@request.query.a < @request.query.b", info) is (a < b)
    assert ev("@request.query.a = @request.query.b", info) is (a == b)
    assert ev(f"@request.query.a >= {b}", info) is (a >= b)
