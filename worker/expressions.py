"""Mapping expressions in AEP Data Prep's vocabulary: parsed once into a tree, compiled to closures.

An expression reads source paths of a push (``attendee.email``, ``${Survey Answer}``), literals
(``"text"``, ``42``, ``1.5``, ``true``, ``false``, ``null``), the operators ``==``, ``!=``, ``<``,
``<=``, ``>``, ``>=``, ``&&``, ``||``, ``!`` and calls of the functions in :data:`FUNCTIONS`, with
Data Prep's names, argument order and meaning
(https://experienceleague.adobe.com/en/docs/experience-platform/data-prep/functions).

The parser is ours, a few dozen lines of recursive descent, rather than a general expression
library: the language is small and fixed, nothing in it can reach Python (no ``eval``, no
attribute access, no imports), and every error carries the column it is at, which ``mapping
check`` reports. Each node compiles to a closure over the flat push, so evaluating a mapping is a
chain of plain function calls, with no tree walk per push.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.push import PUSH_FIELDS, as_text, xdm_time

#: What a compiled expression is: the flat push (dotted path → value) in, a value (or None) out.
Evaluator = Callable[[Mapping[str, Any]], Any]


class ExpressionError(ValueError):
    """An expression that cannot be parsed, or calls a function wrongly; ``column`` is 1-based."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.column = column


class EvaluationError(ValueError):
    """A function that failed on a present value: the push is invalid for this mapping."""


# --- functions --------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    try:
        return as_text(value)
    except ValueError:
        raise EvaluationError(f"expected text, got {type(value).__name__}") from None


def _lower(value: Any) -> str | None:
    text = _text(value)
    return None if text is None else text.lower()


def _upper(value: Any) -> str | None:
    text = _text(value)
    return None if text is None else text.upper()


def _trim(value: Any) -> str | None:
    text = _text(value)
    return None if text is None else text.strip()


def _concat(*values: Any) -> str | None:
    # Data Prep joins the strings it is given; a missing one adds nothing.
    parts = [_text(value) for value in values]
    present = [part for part in parts if part is not None]
    return "".join(present) if present else None


def _substr(value: Any, start: Any, length: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    begin, size = _integer(start), _integer(length)
    if begin is None or size is None or begin < 0 or size < 0:
        raise EvaluationError("substr needs a start and a length of 0 or more")
    return text[begin : begin + size]


def _replacestr(value: Any, find: Any, replace: Any) -> str | None:
    text, old, new = _text(value), _text(find), _text(replace)
    if text is None:
        return None
    if not old:
        return text
    return text.replace(old, new or "")


def _split(value: Any, separator: Any) -> list[str] | None:
    # Data Prep splits on any one of the separator's characters and drops empty parts.
    text, sep = _text(value), _text(separator)
    if text is None:
        return None
    if not sep:
        return [text]
    return [part for part in re.split("[" + re.escape(sep) + "]", text) if part]


def _digest(name: str) -> Callable[..., str | None]:
    def digest(value: Any, charset: Any = "UTF-8") -> str | None:
        text, encoding = _text(value), _text(charset) or "UTF-8"
        if text is None:
            return None
        try:
            data = text.encode(encoding)
        except (LookupError, UnicodeEncodeError):
            raise EvaluationError(f"{name}: cannot encode the value as {encoding}") from None
        return hashlib.new(name, data).hexdigest()

    return digest


def _integer(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise EvaluationError("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise EvaluationError(f"{value!r} is not an integer")
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise EvaluationError(f"{value!r} is not an integer")


def _float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise EvaluationError("expected a number, got a boolean")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise EvaluationError(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise EvaluationError(f"{value!r} is not a finite number")
    return number


def _coalesce(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def _iif(condition: Any, then: Any, otherwise: Any) -> Any:
    return then if _truth(condition) else otherwise


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, dict)) and len(value) == 0)


def _ltrim(value: Any) -> str | None:
    text = _text(value)
    return None if text is None else text.lstrip()


def _rtrim(value: Any) -> str | None:
    text = _text(value)
    return None if text is None else text.rstrip()


def _nullify() -> None:
    return None


# Data Prep date patterns are Java DateTimeFormatter letters; these cover dates, times, fractions,
# 12-hour clocks and zones. Longest letters first, so "yyyy" is not read as two "yy".
_PATTERN_PARTS = [
    ("yyyy", "%Y"),
    ("yy", "%y"),
    ("MMMM", "%B"),
    ("MMM", "%b"),
    ("MM", "%m"),
    ("M", "%m"),
    ("dd", "%d"),
    ("d", "%d"),
    ("HH", "%H"),
    ("H", "%H"),
    ("hh", "%I"),
    ("h", "%I"),
    ("mm", "%M"),
    ("m", "%M"),
    ("ss", "%S"),
    ("s", "%S"),
    ("SSSSSS", "%f"),
    ("SSS", "%f"),
    ("S", "%f"),
    ("a", "%p"),
    ("XXX", "%z"),
    ("XX", "%z"),
    ("X", "%z"),
    ("Z", "%z"),
    ("EEEE", "%A"),
    ("EEE", "%a"),
]


def strptime_pattern(pattern: str) -> str:
    """A Data Prep (Java) date pattern as a ``strptime`` format; ValueError for letters it lacks."""
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "'":
            end = pattern.find("'", i + 1)
            if end < 0:
                raise ValueError("unclosed quote in the date pattern")
            out.append(pattern[i + 1 : end].replace("%", "%%") or "'")
            i = end + 1
            continue
        for letters, directive in _PATTERN_PARTS:
            if pattern.startswith(letters, i):
                out.append(directive)
                i += len(letters)
                break
        else:
            if pattern[i].isalpha():
                raise ValueError(f"date pattern letter {pattern[i]!r} is not supported")
            out.append(pattern[i].replace("%", "%%"))
            i += 1
    return "".join(out)


#: What ``date(DATE)`` tries, in order, when given no pattern (Data Prep's data-format guide).
DEFAULT_DATE_PATTERNS = (
    "yyyy-MM-dd HH:mm:ssZ",
    "yyyy-MM-dd HH:mm:ss.SSSZ",
    "yyyy-MM-dd HH:mm:ss.SSS",
    "yyyy-MM-dd'T'HH:mm:ss.SSSX",
    "yyyy-MM-dd'T'HH:mm:ss'Z'",
    "yyyy-MM-dd",
    "yyyy/MM/dd",
    "yyyy.MM.dd",
    "yyyy-MMM-dd",
    "yyyyMMdd",
    "MM-dd-yyyy",
    "MMddyyyy",
    "M/dd/yyyy",
    "dd.M.yyyy",
    "M/dd/yyyy hh:mm:ss a",
    "dd.M.yyyy hh:mm:ss a",
    "dd.MMM.yyyy",
    "dd-MMM-yyyy",
)


def _date(value: Any, pattern: Any = None, default: Any = None) -> str | None:
    # The default stands in for a missing date only; a date that does not parse is an error.
    text = _text(value)
    if text is None:
        return None if default is None else _date(default, pattern)
    form = _text(pattern)
    for candidate in (form,) if form else (None, *DEFAULT_DATE_PATTERNS):
        try:
            if candidate is None:
                moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
            else:
                moment = datetime.strptime(text.strip().replace("Z", "+0000"), strptime_pattern(candidate))
        except ValueError:
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)  # a time without a zone is taken as UTC
        return xdm_time(moment)
    shown = repr(form) if form else "any of the default date patterns"
    raise EvaluationError(f"{text!r} does not match {shown}")


@dataclass(frozen=True)
class Function:
    """A mapping function: its implementation and how many arguments it takes."""

    call: Callable[..., Any]
    min_args: int
    max_args: int | None  # None: any number


#: The functions an expression may call, by Data Prep's names.
FUNCTIONS: dict[str, Function] = {
    "lower": Function(_lower, 1, 1),
    "lcase": Function(_lower, 1, 1),
    "upper": Function(_upper, 1, 1),
    "ucase": Function(_upper, 1, 1),
    "trim": Function(_trim, 1, 1),
    "ltrim": Function(_ltrim, 1, 1),
    "rtrim": Function(_rtrim, 1, 1),
    "concat": Function(_concat, 1, None),
    "substr": Function(_substr, 3, 3),
    "replacestr": Function(_replacestr, 3, 3),
    "split": Function(_split, 2, 2),
    "sha256": Function(_digest("sha256"), 1, 2),
    "md5": Function(_digest("md5"), 1, 2),
    "to_integer": Function(_integer, 1, 1),
    "to_float": Function(_float, 1, 1),
    "coalesce": Function(_coalesce, 1, None),
    "iif": Function(_iif, 3, 3),
    "is_empty": Function(_is_empty, 1, 1),
    # Its argument is a source path as a string: compiled specially (see compile_node).
    "contains_key": Function(lambda path: path is not None, 1, 1),
    "nullify": Function(_nullify, 0, 0),
    "date": Function(_date, 1, 3),
}

# Names that are words of the language, not source fields: a field so named needs ${...}.
RESERVED = {"true", "false", "null"} | set(FUNCTIONS)


def _truth(value: Any) -> bool:
    if isinstance(value, str):
        return value != "" and value.lower() != "false"
    return bool(value)


# --- the tree ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    """A string, number, boolean or null written in the expression."""

    value: Any


@dataclass(frozen=True)
class Path:
    """A source path: the dotted name of a push field (or of a group, an object)."""

    name: str


@dataclass(frozen=True)
class Call:
    """A function call."""

    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Unary:
    """``!`` and its operand."""

    operand: Node


@dataclass(frozen=True)
class Binary:
    """A comparison, ``&&`` or ``||``."""

    op: str
    left: Node
    right: Node


Node = Literal | Path | Call | Unary | Binary


def paths(node: Node) -> set[str]:
    """The source paths an expression reads."""
    if isinstance(node, Path):
        return {node.name}
    if isinstance(node, Call):
        if node.name == "contains_key" and isinstance(node.args[0], Literal):
            return {str(node.args[0].value)}
        return set().union(*(paths(arg) for arg in node.args)) if node.args else set()
    if isinstance(node, Unary):
        return paths(node.operand)
    if isinstance(node, Binary):
        return paths(node.left) | paths(node.right)
    return set()


# --- parsing ----------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>\d+(?:\.\d+)?)
      | (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<wrapped>\$\{(?:[^}\\]|\\.)*\})
      | (?P<name>[A-Za-z_$][A-Za-z0-9_$]*)
      | (?P<op>==|!=|<=|>=|&&|\|\||[<>!(),.\-])
    )""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "/": "/"}


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    column: int


def _tokens(source: str) -> list[_Token]:
    out, i = [], 0
    while i < len(source):
        if source[i:].strip() == "":
            break
        match = _TOKEN.match(source, i)
        if match is None or match.lastgroup is None:
            column = i + 1 + (len(source[i:]) - len(source[i:].lstrip()))
            raise ExpressionError(f"unexpected character {source[column - 1]!r}", column)
        start = match.start(match.lastgroup)
        out.append(_Token(match.lastgroup, match.group(match.lastgroup), start + 1))
        i = match.end()
    out.append(_Token("end", "", len(source) + 1))
    return out


def _unescape(body: str, column: int) -> str:
    out, i = [], 0
    while i < len(body):
        if body[i] == "\\":
            if i + 1 >= len(body) or body[i + 1] not in _ESCAPES:
                raise ExpressionError("unknown escape in a string", column + i)
            out.append(_ESCAPES[body[i + 1]])
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


class _Parser:
    def __init__(self, source: str) -> None:
        self.tokens = _tokens(source)
        self.i = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.i]

    def take(self, text: str | None = None, kind: str | None = None) -> _Token | None:
        token = self.token
        if (text is None or token.text == text) and (kind is None or token.kind == kind):
            if token.kind == "end" and text is None and kind is None:
                return None
            self.i += 1
            return token
        return None

    def expect(self, text: str) -> _Token:
        token = self.take(text)
        if token is None:
            found = self.token.text or "the end"
            raise ExpressionError(f"expected {text!r}, found {found!r}", self.token.column)
        return token

    def parse(self) -> Node:
        node = self.disjunction()
        if self.token.kind != "end":
            raise ExpressionError(f"unexpected {self.token.text!r}", self.token.column)
        return node

    def disjunction(self) -> Node:
        node = self.conjunction()
        while self.take("||"):
            node = Binary("||", node, self.conjunction())
        return node

    def conjunction(self) -> Node:
        node = self.comparison()
        while self.take("&&"):
            node = Binary("&&", node, self.comparison())
        return node

    def comparison(self) -> Node:
        node = self.unary()
        for op in ("==", "!=", "<=", ">=", "<", ">"):
            if self.take(op):
                return Binary(op, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.take("!"):
            return Unary(self.unary())
        return self.primary()

    def primary(self) -> Node:
        token = self.token
        if self.take("("):
            node = self.disjunction()
            self.expect(")")
            return node
        if token.kind == "op" and token.text == "-":
            self.i += 1
            number = self.take(kind="number")
            if number is None:
                raise ExpressionError("expected a number after '-'", token.column)
            return Literal(-_number(number.text))
        if self.take(kind="number"):
            return Literal(_number(token.text))
        if self.take(kind="string"):
            return Literal(_unescape(token.text[1:-1], token.column + 1))
        if token.kind in ("name", "wrapped"):
            return self.name_or_call()
        found = token.text or "the end"
        raise ExpressionError(
            f"expected a value, a source path or a function call, found {found!r}", token.column
        )

    def name_or_call(self) -> Node:
        first = self.token
        self.i += 1
        if first.kind == "name" and self.token.text == "(":
            return self.call(first)
        if first.kind == "name" and first.text in ("true", "false", "null"):
            return Literal({"true": True, "false": False, "null": None}[first.text])
        if first.kind == "name" and first.text in FUNCTIONS:
            raise ExpressionError(
                f"{first.text!r} is a function: wrap a field of that name as ${{{first.text}}}", first.column
            )
        segments = [_segment(first)]
        while self.take("."):
            token = self.token
            if token.kind not in ("name", "wrapped"):
                raise ExpressionError("expected a field name after '.'", token.column)
            self.i += 1
            segments.append(_segment(token))
        return Path(".".join(segments))

    def call(self, name: _Token) -> Node:
        self.expect("(")
        args: list[Node] = []
        if not self.take(")"):
            args.append(self.disjunction())
            while self.take(","):
                args.append(self.disjunction())
            self.expect(")")
        function = FUNCTIONS.get(name.text)
        if function is None:
            raise ExpressionError(f"unknown function {name.text!r}", name.column)
        if len(args) < function.min_args or (function.max_args is not None and len(args) > function.max_args):
            if function.max_args is None:
                wanted = f"at least {function.min_args}"
            elif function.min_args == function.max_args:
                wanted = str(function.min_args)
            else:
                wanted = f"{function.min_args} to {function.max_args}"
            raise ExpressionError(f"{name.text} takes {wanted} argument(s), got {len(args)}", name.column)
        pattern = args[1] if name.text == "date" and len(args) >= 2 else None
        if isinstance(pattern, Literal) and pattern.value is not None:
            try:
                strptime_pattern(str(pattern.value))
            except ValueError as exc:
                raise ExpressionError(f"date: {exc}", name.column) from None
        return Call(name.text, tuple(args))


def _segment(token: _Token) -> str:
    if token.kind == "wrapped":
        # ${First\.Name} is one key "First.Name"; a plain ${First Name} is the name as written.
        return token.text[2:-1].replace("\\.", ".")
    return token.text


def _number(text: str) -> int | float:
    return float(text) if "." in text else int(text)


def parse(source: str) -> Node:
    """The tree of an expression; ExpressionError (with a column) when it is not one."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("an expression is needed", 1)
    return _Parser(source).parse()


# --- compiling --------------------------------------------------------------------------------


def lookup(values: Mapping[str, Any], name: str) -> Any:
    """The value at a dotted path of the flat push; a group's path gives its fields as an object."""
    value = values.get(name)
    if value is not None:
        return value
    prefix = name + "."
    group = {key[len(prefix) :]: item for key, item in values.items() if key.startswith(prefix)}
    return group or None


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def compile_node(node: Node) -> Evaluator:
    """A closure that evaluates ``node`` over a flat push."""
    if isinstance(node, Literal):
        constant = node.value
        return lambda values: constant
    if isinstance(node, Path):
        name = node.name
        if name in PUSH_FIELDS:
            # A field of the push schema is a value, never a group: no group to gather.
            return lambda values: values.get(name)
        return lambda values: lookup(values, name)
    if isinstance(node, Unary):
        operand = compile_node(node.operand)
        return lambda values: not _truth(operand(values))
    if isinstance(node, Binary):
        left, right = compile_node(node.left), compile_node(node.right)
        if node.op == "&&":
            return lambda values: _truth(left(values)) and _truth(right(values))
        if node.op == "||":
            return lambda values: _truth(left(values)) or _truth(right(values))
        compare = _COMPARE[node.op]

        def comparison(values: Mapping[str, Any]) -> bool:
            a, b = left(values), right(values)
            if node.op in ("==", "!="):
                return compare(a, b)
            if a is None or b is None:
                return False
            try:
                return compare(a, b)
            except TypeError:
                raise EvaluationError(f"cannot compare {a!r} with {b!r}") from None

        return comparison
    if node.name == "contains_key":
        (path,) = node.args
        read = compile_node(path)
        return lambda values: lookup(values, str(read(values))) is not None
    function = FUNCTIONS[node.name].call
    args = [compile_node(arg) for arg in node.args]
    if len(args) == 1:
        (only,) = args
        return lambda values: function(only(values))
    return lambda values: function(*(arg(values) for arg in args))


def compile_expression(source: str) -> tuple[Node, Evaluator]:
    """Parse and compile an expression (ExpressionError when it is not one)."""
    node = parse(source)
    return node, compile_node(node)
