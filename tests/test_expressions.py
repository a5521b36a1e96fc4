"""Mapping expressions: every function with a value, with null and with a wrong type; parse errors."""

from __future__ import annotations

from typing import Any

import pytest

from worker.expressions import FUNCTIONS, EvaluationError, ExpressionError, compile_expression, parse, paths

ADA_SHA256 = "b5fc85e55755f9e0d030a10ab4429b6b2944855f9a0d60077fe832becbc41d72"
PUSH = {
    "attendee.email": " Ada@Example.COM ",
    "attendee.attendeeId": "A1",
    "session.length": 90,
    "session.title": "Inspiration Keynote",
    "Survey Answer": "yes",
    "a.b": "dotted",
    "flag": True,
    "score": 2.5,
}


def run(source: str, values: dict[str, Any] | None = None) -> Any:
    """Parse, compile and evaluate ``source`` over ``values`` (the sample push by default)."""
    return compile_expression(source)[1](PUSH if values is None else values)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('lower("HeLLo")', "hello"),
        ('lcase("HeLLo")', "hello"),
        ('upper("HeLLo")', "HELLO"),
        ('ucase("HeLLo")', "HELLO"),
        ('trim(" hello ")', "hello"),
        ('ltrim(" hello ")', "hello "),
        ('rtrim(" hello ")', " hello"),
        ('concat("Hi, ", "there", "!")', "Hi, there!"),
        ('substr("This is a substring test", 7, 8)', " a subst"),
        ('replacestr("This is a string re test", "re", "replace")', "This is a string replace test"),
        ('split("Hello world", " ")', ["Hello", "world"]),
        ('sha256("ada@example.com")', "b5fc85e55755f9e0d030a10ab4429b6b2944855f9a0d60077fe832becbc41d72"),
        (
            'sha256("ada@example.com", "UTF-8")',
            "b5fc85e55755f9e0d030a10ab4429b6b2944855f9a0d60077fe832becbc41d72",
        ),
        ('md5("hello")', "5d41402abc4b2a76b9719d911017c592"),
        ('to_integer("42")', 42),
        ("to_integer(7.0)", 7),
        ('to_float("12.5")', 12.5),
        ('coalesce(null, null, "first", "second")', "first"),
        ('iif(session.length > 60, "long", "short")', "long"),
        ("is_empty(missing)", True),
        ('is_empty("")', True),
        ("is_empty(session.title)", False),
        ('contains_key("attendee.email")', True),
        ('contains_key("attendee")', True),
        ('contains_key("lead.note")', False),
        ("nullify()", None),
        ('date("2019-10-23 11:24", "yyyy-MM-dd HH:mm")', "2019-10-23T11:24:00.000Z"),
        ('date("2019-10-23 11:24:00+0200", "yyyy-MM-dd HH:mm:ssZ")', "2019-10-23T09:24:00.000Z"),
        ('date("2019-10-23")', "2019-10-23T00:00:00.000Z"),
        ('date("12/31/2020")', "2020-12-31T00:00:00.000Z"),
        ('date(null, "yyyy-MM-dd", "2020-01-01")', "2020-01-01T00:00:00.000Z"),
        ("lower(trim(attendee.email))", "ada@example.com"),
        ("${Survey Answer}", "yes"),
        ("${a\\.b}", "dotted"),
        ("attendee", {"email": " Ada@Example.COM ", "attendeeId": "A1"}),
        ("session.length == 90 && !is_empty(attendee.email) || false", True),
        ("!flag", False),
        ("score >= 2.5", True),
        ("-3", -3),
        ('"a \\"quoted\\" word"', 'a "quoted" word'),
    ],
)
def test_functions_and_operators_follow_data_prep(source: str, expected: Any) -> None:
    assert run(source) == expected


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_function_given_null_does_not_crash(name: str) -> None:
    function = FUNCTIONS[name]
    args = ", ".join(["null"] * max(function.min_args, 1 if function.max_args != 0 else 0))
    if name == "contains_key":
        args = '"nothing.here"'
    result = run(f"{name}({args})")
    # Null in, null out; the predicates answer a plain boolean.
    assert result in (None, True, False)


@pytest.mark.parametrize(
    "source",
    [
        "lower(attendee)",  # an object is not text
        'substr("abc", -1, 2)',
        'to_integer("ninety")',
        "to_integer(2.5)",
        "to_integer(flag)",
        'to_float("x")',
        'date("not a date", "yyyy-MM-dd")',
        'date("31.12.2020 99:00", "dd.MM.yyyy HH:mm")',
        'sha256("x", "no-such-charset")',
        'session.length < "ninety"',
    ],
)
def test_a_function_that_fails_on_a_present_value_raises_an_evaluation_error(source: str) -> None:
    with pytest.raises(EvaluationError):
        run(source)


@pytest.mark.parametrize(
    ("source", "message", "column"),
    [
        ("lower(", "expected a value", 7),
        ("frobnicate(x)", "unknown function 'frobnicate'", 1),
        ("lower(a, b)", "lower takes 1 argument(s), got 2", 1),
        ("concat()", "concat takes at least 1 argument(s), got 0", 1),
        ("a ==", "expected a value", 5),
        ('"open', "unexpected character", 1),
        ("lower", "'lower' is a function", 1),
        ('date(x, "yyyy-QQ")', "date pattern letter 'Q' is not supported", 1),
        ("a.", "expected a field name after '.'", 3),
        ("a + b", "unexpected character '+'", 3),
        ("", "an expression is needed", 1),
        ('"bad \\q escape"', "unknown escape", 6),
    ],
)
def test_a_bad_expression_is_refused_with_its_column(source: str, message: str, column: int) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse(source)
    assert message in caught.value.message
    assert caught.value.column == column


def test_nothing_reaches_python() -> None:
    for source in ('__import__("os")', "eval(x)", "(lambda: 1)()", "x[0]", "open(x)"):
        with pytest.raises(ExpressionError):
            parse(source)
    # A dunder is only a field name: looked up in the push, never an attribute of anything.
    assert run("attendee.__class__") is None
    assert run("${__class__}", {"__class__": "just text"}) == "just text"


def test_paths_lists_what_an_expression_reads() -> None:
    node = parse('coalesce(lower(attendee.email), ${Survey Answer}, contains_key("lead.note"), "x")')
    assert paths(node) == {"attendee.email", "Survey Answer", "lead.note"}


WRONG_TYPE = {
    # function: (call with an object where a value belongs, what it gives: an error or a value)
    "lower": ("lower(attendee)", EvaluationError),
    "lcase": ("lcase(attendee)", EvaluationError),
    "upper": ("upper(attendee)", EvaluationError),
    "ucase": ("ucase(attendee)", EvaluationError),
    "trim": ("trim(attendee)", EvaluationError),
    "ltrim": ("ltrim(attendee)", EvaluationError),
    "rtrim": ("rtrim(attendee)", EvaluationError),
    "concat": ('concat("a", attendee)', EvaluationError),
    "substr": ('substr("abc", "x", 1)', EvaluationError),
    "replacestr": ('replacestr(attendee, "a", "b")', EvaluationError),
    "split": ('split(attendee, ",")', EvaluationError),
    "sha256": ("sha256(attendee)", EvaluationError),
    "md5": ("md5(attendee)", EvaluationError),
    "to_integer": ("to_integer(attendee)", EvaluationError),
    "to_float": ("to_float(attendee)", EvaluationError),
    "date": ("date(attendee)", EvaluationError),
    # These take any value: the wrong type is not an error, and the answer is defined.
    "coalesce": ("coalesce(null, flag)", True),
    "iif": ('iif(attendee, "yes", "no")', "yes"),
    "is_empty": ("is_empty(flag)", False),
    "contains_key": ("contains_key(42)", False),
    "nullify": ("nullify()", None),
}


def test_every_function_has_a_wrong_type_case() -> None:
    assert set(WRONG_TYPE) == set(FUNCTIONS)


@pytest.mark.parametrize("name", sorted(WRONG_TYPE))
def test_every_function_given_the_wrong_type_fails_cleanly_or_answers_as_defined(name: str) -> None:
    source, expected = WRONG_TYPE[name]
    if expected is EvaluationError:
        with pytest.raises(EvaluationError):
            run(source)
    else:
        assert run(source) == expected
