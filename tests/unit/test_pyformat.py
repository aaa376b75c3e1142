"""Unit tests for pocketjobs.core.postgres.to_pyformat (``?`` placeholders to ``%s``).

The translation must find the ``?`` that are placeholders and leave every other ``?``
alone: inside string literals, quoted identifiers and comments, and the ``??`` that stands
for PostgreSQL's JSONB ``?`` operators. tests/integration/test_db.py runs the same forms
on a real server.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pocketjobs.core.postgres import to_pyformat


def case(sql: str, expected: str, name: str) -> object:
    """One translation case, shown as ``name`` in the test ids."""
    return pytest.param(sql, expected, id=name)


BASICS = [
    case("SELECT ?", "SELECT %s", "placeholder"),
    case("SELECT ?, ?,?", "SELECT %s, %s,%s", "several placeholders"),
    case("SELECT 1", "SELECT 1", "no placeholder"),
    case("", "", "empty"),
    case("SELECT 5 % 2, ?", "SELECT 5 %% 2, %s", "percent operator"),
    case("SELECT '%s', ?", "SELECT '%%s', %s", "percent-s inside a literal is text"),
    case(
        "SELECT format('EXECUTE p (%L)', ?)",
        "SELECT format('EXECUTE p (%%L)', %s)",
        "format() directive",
    ),
]

STANDARD_STRINGS = [
    case("SELECT '?', ?", "SELECT '?', %s", "question mark"),
    case("SELECT 'it''s ?' || ?", "SELECT 'it''s ?' || %s", "doubled quote"),
    case("SELECT '''?''', ?", "SELECT '''?''', %s", "doubled quotes at both ends"),
    case("SELECT '', ?, ''", "SELECT '', %s, ''", "empty strings"),
    # With standard_conforming_strings on, a backslash is an ordinary character here:
    # the quote after it closes the string.
    case("SELECT 'a\\', ?", "SELECT 'a\\', %s", "backslash does not escape"),
    case("SELECT 'a%' LIKE ?", "SELECT 'a%%' LIKE %s", "percent"),
    case("SELECT U&'d\\0061t?', ?", "SELECT U&'d\\0061t?', %s", "unicode escape string"),
    case("SELECT '--', ?, '/*', ?", "SELECT '--', %s, '/*', %s", "comment markers"),
    case("SELECT '$$', ?, '$$'", "SELECT '$$', %s, '$$'", "dollar quotes inside"),
    case("SELECT 'x'?", "SELECT 'x'%s", "placeholder right after"),
]

QUOTED_IDENTIFIERS = [
    case('SELECT "we?ird" FROM t WHERE a = ?', 'SELECT "we?ird" FROM t WHERE a = %s', "plain"),
    case('SELECT "a""?" , ?', 'SELECT "a""?" , %s', "doubled quote"),
    case('SELECT "it\'s ?", ?', 'SELECT "it\'s ?", %s', "single quote inside"),
    case('SELECT "100%" , ?', 'SELECT "100%%" , %s', "percent"),
]

ESCAPE_STRINGS = [
    case("SELECT E'it\\'s ?', ?", "SELECT E'it\\'s ?', %s", "backslash quote"),
    case("SELECT e'?\\\\', ?", "SELECT e'?\\\\', %s", "escaped backslash before the end"),
    case("SELECT E'a''?', ?", "SELECT E'a''?', %s", "doubled quote"),
    case("SELECT E'\\n?\\t%', ?", "SELECT E'\\n?\\t%%', %s", "other escapes and percent"),
    # A string continued on the next line is the same E-string, backslashes included.
    case("SELECT E'a'\n  '\\' ?', ?", "SELECT E'a'\n  '\\' ?', %s", "continuation"),
    # The e ending a word does not make an E-string: the backslash is ordinary.
    case("SELECT some'\\', ?", "SELECT some'\\', %s", "e ending a word"),
]

DOLLAR_QUOTES = [
    case("SELECT $$it's ?$$, ?", "SELECT $$it's ?$$, %s", "empty tag"),
    case("SELECT $fn$ ? $fn$, ?", "SELECT $fn$ ? $fn$, %s", "tag"),
    case(
        "SELECT $fn$ a ? $$ b ? $$ ' $fn$, ?",
        "SELECT $fn$ a ? $$ b ? $$ ' $fn$, %s",
        "another delimiter and a stray quote inside",
    ),
    case("SELECT $a$ $ab$ ? $a$, ?", "SELECT $a$ $ab$ ? $a$, %s", "longer tag inside"),
    case("SELECT $_x1$?$_x1$, ?", "SELECT $_x1$?$_x1$, %s", "underscore and digit in tag"),
    case("SELECT $é$ ? $é$, ?", "SELECT $é$ ? $é$, %s", "non-ASCII tag"),
    case("SELECT $$x$$?", "SELECT $$x$$%s", "placeholder right after"),
    case("SELECT $$x$$||?||$t$?$t$", "SELECT $$x$$||%s||$t$?$t$", "two bodies around one"),
    case("SELECT $$100% ??$$, ?", "SELECT $$100%% ??$$, %s", "percent and ?? inside"),
    # $1 is a positional parameter, not a delimiter: the ? after it is a placeholder.
    case("SELECT $1::text || ?", "SELECT $1::text || %s", "positional parameter"),
    case("SELECT $1, $2$, ?", "SELECT $1, $2$, %s", "positional parameter then dollar"),
    # `$` continues an identifier, so a$$b is a name, not the start of a quote.
    case("SELECT a$$b, ?, c$$d", "SELECT a$$b, %s, c$$d", "dollars inside identifiers"),
    case("SELECT é$$x, ?", "SELECT é$$x, %s", "dollars inside a non-ASCII identifier"),
    case("SELECT $, ?", "SELECT $, %s", "lone dollar"),
    case(
        "CREATE FUNCTION f(doc jsonb) RETURNS text LANGUAGE plpgsql AS $body$\n"
        "BEGIN\n"
        "    IF doc ? 'k' THEN RAISE NOTICE '% has k?', doc; END IF;\n"
        "    RETURN 'it''s ?';\n"
        "END\n"
        "$body$",
        "CREATE FUNCTION f(doc jsonb) RETURNS text LANGUAGE plpgsql AS $body$\n"
        "BEGIN\n"
        "    IF doc ? 'k' THEN RAISE NOTICE '%% has k?', doc; END IF;\n"
        "    RETURN 'it''s ?';\n"
        "END\n"
        "$body$",
        "PL/pgSQL function body",
    ),
]

COMMENTS = [
    case("SELECT 'a%' -- what?\n, ?", "SELECT 'a%%' -- what?\n, %s", "line comment"),
    case("SELECT ? -- it's ?\n, ?", "SELECT %s -- it's ?\n, %s", "quote in line comment"),
    case("SELECT ? -- done?", "SELECT %s -- done?", "line comment at the end"),
    case("SELECT 1 -- ?\r, ?", "SELECT 1 -- ?\r, %s", "line comment ended by CR"),
    case("SELECT /* ? */ ?", "SELECT /* ? */ %s", "block comment"),
    case("SELECT /* 100% */ ?", "SELECT /* 100%% */ %s", "percent in block comment"),
    case("SELECT /* don't ? */ ?", "SELECT /* don't ? */ %s", "quote in block comment"),
    case(
        "SELECT /* a /* ? */ still ? */ ?",
        "SELECT /* a /* ? */ still ? */ %s",
        "nested block comments",
    ),
    case("SELECT /**/?/**/", "SELECT /**/%s/**/", "empty block comments"),
    case("SELECT /* -- */ ?", "SELECT /* -- */ %s", "line marker inside block comment"),
    case("SELECT -- /*\n?", "SELECT -- /*\n%s", "block marker inside line comment"),
    case("SELECT 4 - -?", "SELECT 4 - -%s", "minus signs are not a comment"),
    case("SELECT 4 / ? * 2", "SELECT 4 / %s * 2", "division and product"),
]

JSONB_OPERATORS = [
    case("SELECT payload ?? 'key'", "SELECT payload ? 'key'", "exists"),
    case("SELECT payload ??| array['a', ?]", "SELECT payload ?| array['a', %s]", "any"),
    case("SELECT payload ??& ?", "SELECT payload ?& %s", "all"),
    case("SELECT ? ?? ?", "SELECT %s ? %s", "between placeholders"),
    case("SELECT payload??'k'", "SELECT payload?'k'", "no spaces"),
    case("SELECT ???", "SELECT ?%s", "operator then placeholder"),
    case("SELECT ????", "SELECT ??", "two operators"),
    case("SELECT '??', ?", "SELECT '??', %s", "doubled inside a literal stays doubled"),
]

UNTERMINATED = [
    case("SELECT 'abc ? %", "SELECT 'abc ? %%", "string"),
    case('SELECT "abc ?', 'SELECT "abc ?', "identifier"),
    case("SELECT E'abc\\' ?", "SELECT E'abc\\' ?", "E-string"),
    case("SELECT E'abc\\", "SELECT E'abc\\", "E-string ending in a backslash"),
    case("SELECT $$ ? ", "SELECT $$ ? ", "dollar quote"),
    case("SELECT $t$ ? $$", "SELECT $t$ ? $$", "tagged dollar quote"),
    case("SELECT /* ? ", "SELECT /* ? ", "block comment"),
    case("SELECT /* /* ? */ ?", "SELECT /* /* ? */ ?", "nested block comment"),
]


@pytest.mark.parametrize(("sql", "expected"), BASICS)
def test_placeholders_and_percent_signs(sql: str, expected: str) -> None:
    assert to_pyformat(sql) == expected


@pytest.mark.parametrize(("sql", "expected"), STANDARD_STRINGS)
def test_standard_strings_are_copied(sql: str, expected: str) -> None:
    assert to_pyformat(sql) == expected


@pytest.mark.parametrize(("sql", "expected"), QUOTED_IDENTIFIERS)
def test_quoted_identifiers_are_copied(sql: str, expected: str) -> None:
    assert to_pyformat(sql) == expected


@pytest.mark.parametrize(("sql", "expected"), ESCAPE_STRINGS)
def test_escape_strings_are_copied(sql: str, expected: str) -> None:
    assert to_pyformat(sql) == expected


@pytest.mark.parametrize(("sql", "expected"), DOLLAR_QUOTES)
def test_dollar_quoted_strings_are_copied(sql: str, expected: str) -> None:
    assert to_pyformat(sql) == expected


@pytest.mark.parametrize(("sql", "expected"), COMMENTS)
def test_comments_are_copied(sql: str, expected: str) -> None:
    assert to_pyformat(sql) == expected


@pytest.mark.parametrize(("sql", "expected"), JSONB_OPERATORS)
def test_doubled_question_mark_is_one_literal_question_mark(sql: str, expected: str) -> None:
    assert to_pyformat(sql) == expected


@pytest.mark.parametrize(("sql", "expected"), UNTERMINATED)
def test_unterminated_literal_runs_to_the_end(sql: str, expected: str) -> None:
    # Copied as it is (percent signs doubled), so the server reports the syntax error.
    assert to_pyformat(sql) == expected


def test_translations_are_cached() -> None:
    sql = "SELECT ? AS cached_translation_probe"
    first = to_pyformat(sql)
    hits = to_pyformat.cache_info().hits
    assert to_pyformat(sql) is first
    assert to_pyformat.cache_info().hits == hits + 1


# --------------------------------------------------------------------------- properties

# Characters that mean something to the scanner, plus a few that do not.
SQL_CHARS = st.text(alphabet="?%'\"$Ee\\/*-\n\r ab1_é|&", max_size=40)
# What psycopg accepts: every % is a placeholder or an escaped percent sign.
PSYCOPG_QUERY = re.compile(r"(?:[^%]|%%|%s)*", re.DOTALL)


@given(SQL_CHARS)
def test_output_is_always_a_valid_psycopg_query(sql: str) -> None:
    assert PSYCOPG_QUERY.fullmatch(to_pyformat(sql))


@given(st.text().filter(lambda s: "?" not in s and "%" not in s))
def test_text_without_question_marks_or_percent_signs_is_unchanged(sql: str) -> None:
    assert to_pyformat(sql) == sql


def dollar_tag(content: str) -> str:
    """A dollar-quote delimiter that first appears in ``content + tag`` at its end."""
    tag = "$$"
    while (content + tag).find(tag) != len(content):
        tag = tag[:-1] + "q$"
    return tag


def quoted_forms(content: str) -> list[str]:
    """``content`` as each kind of literal, quoted identifier and comment that can hold
    it."""
    tag = dollar_tag(content)
    forms = [
        "'" + content.replace("'", "''") + "'",
        '"' + content.replace('"', '""') + '"',
        "E'" + content.replace("\\", "\\\\").replace("'", "\\'") + "'",
        tag + content + tag,
    ]
    if "/*" not in content and "*/" not in content and not content.endswith("/"):
        forms.append("/*" + content + "*/")
    if "\n" not in content and "\r" not in content:
        forms.append("--" + content + "\n")
    return forms


@given(SQL_CHARS)
def test_any_content_of_a_literal_or_comment_is_copied(content: str) -> None:
    for form in quoted_forms(content):
        sql = f"SELECT {form}, ? ?? ?"
        expected = f"SELECT {form.replace('%', '%%')}, %s ? %s"
        assert to_pyformat(sql) == expected, form
