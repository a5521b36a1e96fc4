"""The operator's mapping file (``MAPPING_FILE``): loaded, checked with line numbers, compiled, applied.

The file's keys are ``version``, ``identities``, ``event``, ``fields``, ``overrides`` and ``tests``
(README, "Your own mapping"). :func:`load` reads YAML or JSON, reports every problem as
``FILE:LINE: what`` (:class:`MappingError`), and returns a :class:`Mapping` whose every expression
is compiled once; :meth:`Mapping.apply` turns one validated push into the XDM ExperienceEvent.
The built-in default (``worker/mappings/``) is the same thing as a file, one per identity namespace.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from typing import Any, cast

import redis
import yaml

from shared import keys, metrics
from shared.push import IDENTITY_FIELD, PUSH_FIELDS, as_integer, as_text, xdm_time
from shared.settings import ConfigError, Settings
from worker import expressions
from worker.errors import InvalidPush
from worker.expressions import EvaluationError, Evaluator, ExpressionError, Node

log = logging.getLogger(__name__)

VERSION = 1
TYPES = ("string", "integer", "number", "boolean", "date-time", "date")
TENANT = "_{tenant}"
STRUCTURAL = ("_id", "timestamp", "eventType")
DEFAULT_EVENT = {"_id": "sha256(transmissionId)", "timestamp": "timestamp", "eventType": "eventType"}
_TOP_KEYS = {"version", "identities", "event", "fields", "overrides", "tests"}
_FIELD_KEYS = {"value", "type", "required"}
_IDENTITY_KEYS = {"namespace", "value", "primary", "authenticatedState"}
_AUTH_STATES = ("ambiguous", "authenticated", "loggedOut")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a mapping file, at a line of it (1-based; 0 when the file has none)."""

    line: int
    message: str


class MappingError(ValueError):
    """A mapping file that cannot be used; ``problems`` lists every one found."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """``FILE:LINE: what``, one per problem."""
        return [
            f"{self.source}:{p.line}: {p.message}" if p.line else f"{self.source}: {p.message}"
            for p in self.problems
        ]


@dataclass(frozen=True)
class FieldRule:
    """One destination of the tenant object (or of the event), its expression and XDM type."""

    destination: str
    expression: str
    node: Node
    evaluate: Evaluator
    type: str
    required: bool
    line: int
    parents: tuple[str, ...] = field(init=False, repr=False, compare=False)
    leaf: str = field(init=False, repr=False, compare=False)
    #: The push field a rule copies as is (a bare path of the push schema, to a string): apply reads
    #: it straight from the push, the way a hand-written table would.
    copies: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        *parents, leaf = self.destination.split(".")
        object.__setattr__(self, "parents", tuple(parents))
        object.__setattr__(self, "leaf", leaf)
        node = self.node
        plain = isinstance(node, expressions.Path) and node.name in PUSH_FIELDS and self.type == "string"
        object.__setattr__(
            self, "copies", node.name if isinstance(node, expressions.Path) and plain else None
        )

    @property
    def sources(self) -> list[str]:
        """The source paths the expression reads, sorted (named in a dead letter)."""
        return sorted(expressions.paths(self.node))


@dataclass(frozen=True)
class IdentityRule:
    """One identityMap entry: namespace, value expression, primary flag and authenticated state."""

    namespace: str
    expression: str
    node: Node
    evaluate: Evaluator
    primary: bool
    authenticated_state: str


@dataclass(frozen=True)
class MappingTest:
    """One inline test: a push and the xdmEntity it must become, or ``invalid``."""

    push: dict[str, Any]
    expect: dict[str, Any] | None
    invalid: bool
    line: int


@dataclass
class Mapping:
    """A compiled mapping; ``digest`` names it in outbox entries, dead letters and status."""

    source: str
    digest: str
    text: str
    identities: tuple[IdentityRule, ...]
    event: tuple[FieldRule, ...]
    fields: tuple[FieldRule, ...]
    overrides: dict[str, tuple[FieldRule, ...]]
    tests: tuple[MappingTest, ...]
    #: The fields for each overridden eventType, merged once.
    _by_type: dict[str, tuple[FieldRule, ...]] = field(default_factory=dict, repr=False)
    _runs: dict[str, tuple[tuple[tuple[str, ...], tuple[FieldRule, ...]], ...]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def needs_email(self) -> bool:
        """True when the primary identity reads the email (validation then requires it)."""
        return any(
            identity.primary and IDENTITY_FIELD in expressions.paths(identity.node)
            for identity in self.identities
        )

    def fields_for(self, event_type: str) -> tuple[FieldRule, ...]:
        """The tenant fields a push of ``event_type`` gets."""
        return self._by_type.get(event_type, self.fields)

    def _runs_for(self, event_type: str) -> tuple[tuple[tuple[str, ...], tuple[FieldRule, ...]], ...]:
        # Consecutive fields under one parent are written with one walk down to it: the same
        # objects, keys and order as field by field, at a fraction of the dictionary calls.
        runs = self._runs.get(event_type)
        if runs is None:
            grouped: list[tuple[tuple[str, ...], list[FieldRule]]] = []
            for rule in self.fields_for(event_type):
                if grouped and grouped[-1][0] == rule.parents:
                    grouped[-1][1].append(rule)
                else:
                    grouped.append((rule.parents, [rule]))
            runs = tuple((parents, tuple(rules)) for parents, rules in grouped)
            self._runs[event_type] = runs
        return runs

    @functools.cached_property
    def sources(self) -> frozenset[str]:
        """Every source path some entry reads (what is not among them is unmapped)."""
        nodes = [rule.node for rule in self.identities]
        nodes += [
            rule.node
            for rule in (*self.event, *self.fields, *(r for rs in self.overrides.values() for r in rs))
        ]
        return frozenset(set().union(*(expressions.paths(node) for node in nodes)))

    def apply(self, values: MappingABC[str, Any], event_type: str) -> dict[str, Any]:
        """The xdmEntity for a push's flat values; InvalidPush naming destination and source."""
        event: dict[str, Any] = {}
        for rule in self.event:
            value = _value(rule, values)
            if value is None:
                raise InvalidPush(
                    {_where(rule): [f"Empty, but the mapping needs it for XDM field {rule.destination}."]}
                )
            event[rule.destination] = value
        identity_map: dict[str, list[dict[str, Any]]] = {}
        for identity in self.identities:
            try:
                raw = identity.evaluate(values)
                text = None if raw is None else expressions.FUNCTIONS["trim"].call(raw)
            except EvaluationError as exc:
                where = ", ".join(sorted(expressions.paths(identity.node))) or identity.namespace
                raise InvalidPush(
                    {where: [f"Cannot make the {identity.namespace} identity: {exc}"]}
                ) from None
            if not text:
                if identity.primary:
                    where = ", ".join(sorted(expressions.paths(identity.node))) or identity.namespace
                    raise InvalidPush(
                        {where: [f"Empty, but it is the primary identity ({identity.namespace})."]}
                    )
                continue
            entry = {
                "id": text,
                "primary": identity.primary,
                "authenticatedState": identity.authenticated_state,
            }
            identity_map.setdefault(identity.namespace, []).append(entry)
        event["identityMap"] = identity_map
        for parents, rules in self._runs_for(event_type):
            leaves: dict[str, Any] = {}
            for rule in rules:
                if rule.copies is not None:
                    value = values.get(rule.copies)
                    if value == "":
                        value = None
                    elif value is not None and type(value) is not str:
                        value = _value(rule, values)
                else:
                    value = _value(rule, values)
                if value is None:
                    if rule.required:
                        raise InvalidPush(
                            {_where(rule): [f"Empty, but the mapping requires XDM field {rule.destination}."]}
                        )
                    continue
                leaves[rule.leaf] = value
            if leaves:
                node = event
                for key in parents:
                    node = node.setdefault(key, {})
                node.update(leaves)
        return event

    def resolve(self, tenant: str) -> Mapping:
        """This mapping with ``_{tenant}`` replaced by ``_<tenant>`` in every destination."""

        def fix(rules: tuple[FieldRule, ...]) -> tuple[FieldRule, ...]:
            return tuple(_retarget(rule, tenant) for rule in rules)

        resolved = Mapping(
            source=self.source,
            digest=self.digest,
            text=self.text,
            identities=self.identities,
            event=self.event,
            fields=fix(self.fields),
            overrides={name: fix(rules) for name, rules in self.overrides.items()},
            tests=self.tests,
        )
        resolved._by_type = {name: fix(rules) for name, rules in self._by_type.items()}
        return resolved


def _retarget(rule: FieldRule, tenant: str) -> FieldRule:
    if not rule.destination.startswith(TENANT + "."):
        return rule
    destination = f"_{tenant}" + rule.destination[len(TENANT) :]
    return FieldRule(
        destination, rule.expression, rule.node, rule.evaluate, rule.type, rule.required, rule.line
    )


def _where(rule: FieldRule) -> str:
    return ", ".join(rule.sources) or rule.destination


def _value(rule: FieldRule, values: MappingABC[str, Any]) -> Any:
    try:
        value = rule.evaluate(values)
        if value is None or value == "":
            return None
        if rule.type == "string" and type(value) is str:
            return value  # the common case, without the conversion's dispatch
        return _CONVERTERS[rule.type](value)
    except (EvaluationError, ValueError, TypeError, OverflowError):
        raise InvalidPush(
            {_where(rule): [f"Cannot be converted for XDM field {rule.destination}."]}
        ) from None


def convert(value: Any, kind: str) -> Any:
    """``value`` as the XDM ``kind``; ValueError when it is not one."""
    converter = _CONVERTERS.get(kind)
    if converter is None:
        raise ValueError(f"unknown type {kind!r}")
    return converter(value)


def _to_string(value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise ValueError("an object or list is not a string")
    return _text(value)


def _to_integer(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return as_integer(value)


def _to_number(value: Any) -> float:
    result: float = expressions.FUNCTIONS["to_float"].call(value)
    return result


def _to_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{value!r} is not a boolean")


def _to_date_time(value: Any) -> str:
    if isinstance(value, datetime):
        moment = value
    else:
        moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("a date-time needs a zone")
    return xdm_time(moment)  # which brings any zone to UTC


def _to_date(value: Any) -> str:
    return date.fromisoformat(str(value).strip()[:10]).isoformat()


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "string": _to_string,
    "integer": _to_integer,
    "number": _to_number,
    "boolean": _to_boolean,
    "date-time": _to_date_time,
    "date": _to_date,
}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return as_text(value)


# --- loading ----------------------------------------------------------------------------------


class _Lines:
    """Where each key of the YAML document is (1-based line), by its path of keys and indexes."""

    def __init__(self) -> None:
        self.at: dict[tuple[Any, ...], int] = {}

    def __call__(self, *path: Any) -> int:
        while path and path not in self.at:
            path = path[:-1]
        return self.at.get(path, 1)


def _plain(node: yaml.Node, path: tuple[Any, ...], lines: _Lines, problems: list[Problem]) -> Any:
    lines.at.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(Problem(key_node.start_mark.line + 1, "a key must be plain text"))
                continue
            key = key_node.value  # as written: "1" stays a name, not a number
            if key in out:
                problems.append(
                    Problem(key_node.start_mark.line + 1, f"{_dotted(path, key)} is written twice")
                )
            lines.at[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _plain(value_node, (*path, key), lines, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_plain(item, (*path, i), lines, problems) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _dotted(path: tuple[Any, ...], key: Any) -> str:
    return ".".join(str(part) for part in (*path, key))


def read(text: str, source: str) -> tuple[Any, _Lines, list[Problem]]:
    """Parse YAML or JSON, with each key's line and noting keys written twice (MappingError: unparsable)."""
    lines = _Lines()
    problems: list[Problem] = []
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        message = getattr(exc, "problem", None) or str(exc)
        raise MappingError(source, [Problem(line, f"not valid YAML or JSON: {message}")]) from None
    if node is None:
        raise MappingError(source, [Problem(1, "the file is empty")])
    data = _plain(node, (), lines, problems)
    return data, lines, problems


def load(path: str | Path) -> Mapping:
    """Read, check and compile a mapping file; MappingError with every problem when it is not usable."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(str(path), [Problem(0, f"cannot read the file: {exc}")]) from None
    return loads(text, str(path))


def loads(text: str, source: str = "<mapping>") -> Mapping:
    """:func:`load` for the file's text."""
    data, lines, problems = read(text, source)
    mapping = _compile(data, lines, problems, source, text)
    if problems:
        # The same clash can show in the fields and in an override's merge: report it once.
        raise MappingError(source, sorted(dict.fromkeys(problems), key=lambda p: p.line))
    assert mapping is not None
    return mapping


def default_text(identity_namespace: str) -> str:
    """The shipped default mapping for ``IDENTITY_NAMESPACE`` (README, "Your own mapping")."""
    name = f"default-{identity_namespace}.yaml"
    folder = resources.files("worker.mappings")
    if not folder.joinpath(name).is_file():
        raise ValueError(f"no default mapping for identity namespace {identity_namespace!r}")
    return folder.joinpath(name).read_text(encoding="utf-8")


def default(identity_namespace: str) -> Mapping:
    """The shipped default mapping, compiled."""
    return loads(default_text(identity_namespace), f"default-{identity_namespace}.yaml")


def _compile(data: Any, lines: _Lines, problems: list[Problem], source: str, text: str) -> Mapping | None:
    if not isinstance(data, dict):
        problems.append(Problem(1, "the mapping must be an object with version, identities and fields"))
        return None
    for key in data:
        if key not in _TOP_KEYS:
            problems.append(
                Problem(lines(key), f"unknown key {key!r} (expected one of {', '.join(sorted(_TOP_KEYS))})")
            )
    if data.get("version") != VERSION:
        problems.append(Problem(lines("version"), f"version must be {VERSION}"))
    identities = _identities(data.get("identities"), lines, problems)
    event_data = data.get("event", {}) or {}
    event: list[FieldRule] = []
    if not isinstance(event_data, dict):
        problems.append(Problem(lines("event"), "event must be an object"))
        event_data = {}
    for key in event_data:
        if key not in STRUCTURAL:
            problems.append(
                Problem(lines("event", key), f"event may set only {', '.join(STRUCTURAL)}, not {key!r}")
            )
    for key in STRUCTURAL:
        spec = event_data.get(key, DEFAULT_EVENT[key])
        kind = "date-time" if key == "timestamp" else "string"
        rule = _field(key, spec, ("event", key), lines, problems, default_type=kind, structural=True)
        if rule is not None:
            event.append(rule)
    fields_data = data.get("fields")
    if not isinstance(fields_data, dict) or not fields_data:
        problems.append(Problem(lines("fields"), "fields must be an object of destination: expression"))
        fields_data = {}
    fields = _fields(fields_data, ("fields",), lines, problems)
    overrides: dict[str, tuple[FieldRule, ...]] = {}
    by_type: dict[str, tuple[FieldRule, ...]] = {}
    overrides_data = data.get("overrides", {}) or {}
    if not isinstance(overrides_data, dict):
        problems.append(Problem(lines("overrides"), "overrides must be an object of eventType: fields"))
        overrides_data = {}
    for event_type, spec in overrides_data.items():
        where = ("overrides", event_type)
        if not isinstance(spec, dict):
            problems.append(
                Problem(lines(*where), f"overrides.{event_type} must be an object of destination: expression")
            )
            continue
        removed = {dest for dest, value in spec.items() if value is None}
        for dest in removed:
            if dest not in fields_data:
                problems.append(
                    Problem(
                        lines(*where, dest),
                        f"overrides.{event_type} removes {dest!r}, which fields does not write",
                    )
                )
        added = _fields(
            {k: v for k, v in spec.items() if v is not None}, where, lines, problems, check_clash=False
        )
        overrides[event_type] = added
        replaced = {rule.destination for rule in added} | removed
        merged = tuple(rule for rule in fields if rule.destination not in replaced) + added
        _check_destinations(merged, lines, problems, where)
        by_type[event_type] = merged
    tests = _tests(data.get("tests", []) or [], lines, problems)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    mapping = Mapping(source, digest, text, identities, tuple(event), fields, overrides, tests)
    mapping._by_type = by_type
    return mapping


def _identities(data: Any, lines: _Lines, problems: list[Problem]) -> tuple[IdentityRule, ...]:
    if not isinstance(data, list) or not data:
        problems.append(Problem(lines("identities"), "identities must be a list with one primary identity"))
        return ()
    out = []
    for i, spec in enumerate(data):
        where = ("identities", i)
        if not isinstance(spec, dict):
            problems.append(Problem(lines(*where), "an identity must be an object with namespace and value"))
            continue
        for key in spec:
            if key not in _IDENTITY_KEYS:
                problems.append(Problem(lines(*where, key), f"unknown identity key {key!r}"))
        namespace = spec.get("namespace")
        if not isinstance(namespace, str) or not namespace:
            problems.append(Problem(lines(*where), "an identity needs a namespace (Email, ECID, …)"))
            continue
        state = spec.get("authenticatedState", "authenticated")
        if state not in _AUTH_STATES:
            problems.append(
                Problem(
                    lines(*where, "authenticatedState"),
                    f"authenticatedState must be one of {', '.join(_AUTH_STATES)}",
                )
            )
        primary = spec.get("primary", False)
        if not isinstance(primary, bool):
            problems.append(Problem(lines(*where, "primary"), "primary must be true or false"))
            primary = False
        compiled = _expression(spec.get("value"), (*where, "value"), lines, problems)
        if compiled is not None:
            out.append(
                IdentityRule(namespace, str(spec.get("value")), compiled[0], compiled[1], primary, str(state))
            )
    # Counted from what the file says, so an identity whose expression is wrong is not also "missing".
    primaries = [spec for spec in data if isinstance(spec, dict) and spec.get("primary") is True]
    if len(primaries) != 1:
        problems.append(
            Problem(
                lines("identities"), f"exactly one identity must have primary: true (found {len(primaries)})"
            )
        )
    return tuple(out)


def _expression(
    spec: Any, where: tuple[Any, ...], lines: _Lines, problems: list[Problem]
) -> tuple[Node, Evaluator] | None:
    if isinstance(spec, (bool, int, float)):
        spec = json.dumps(spec)
    if not isinstance(spec, str):
        problems.append(Problem(lines(*where), f"{_dotted(where[:-1], where[-1])} must be an expression"))
        return None
    try:
        return expressions.compile_expression(spec)
    except ExpressionError as exc:
        problems.append(Problem(lines(*where), f"{exc.message} (column {exc.column} of {spec!r})"))
        return None


def _field(
    destination: str,
    spec: Any,
    where: tuple[Any, ...],
    lines: _Lines,
    problems: list[Problem],
    *,
    default_type: str = "string",
    structural: bool = False,
) -> FieldRule | None:
    required = structural
    kind = default_type
    if isinstance(spec, dict):
        for key in spec:
            if key not in _FIELD_KEYS:
                problems.append(
                    Problem(
                        lines(*where, key),
                        f"unknown key {key!r} in {destination} (expected value, type, required)",
                    )
                )
        kind = spec.get("type", default_type)
        if kind not in TYPES:
            problems.append(
                Problem(
                    lines(*where, "type"), f"type {kind!r} of {destination} is not one of {', '.join(TYPES)}"
                )
            )
            kind = default_type
        required = bool(spec.get("required", structural))
        compiled = _expression(spec.get("value"), (*where, "value"), lines, problems)
        expression = spec.get("value")
    else:
        compiled = _expression(spec, where, lines, problems)
        expression = spec
    if compiled is None:
        return None
    return FieldRule(destination, str(expression), compiled[0], compiled[1], kind, required, lines(*where))


def _fields(
    data: dict[str, Any],
    where: tuple[Any, ...],
    lines: _Lines,
    problems: list[Problem],
    *,
    check_clash: bool = True,
) -> tuple[FieldRule, ...]:
    out = []
    for destination, spec in data.items():
        here = (*where, destination)
        if not isinstance(destination, str) or not all(destination.split(".")):
            problems.append(Problem(lines(*here), f"destination {destination!r} has an empty path segment"))
            continue
        if not destination.startswith(TENANT + ".") and destination.split(".")[0] in (
            *STRUCTURAL,
            "identityMap",
        ):
            problems.append(
                Problem(lines(*here), f"{destination} is set by event or identities, not by fields")
            )
            continue
        if not destination.startswith(TENANT + "."):
            problems.append(Problem(lines(*here), f"destination {destination!r} must start with {TENANT}."))
            continue
        rule = _field(destination, spec, here, lines, problems)
        if rule is not None:
            out.append(rule)
    if check_clash:
        _check_destinations(tuple(out), lines, problems, where)
    return tuple(out)


def _check_destinations(
    rules: tuple[FieldRule, ...], lines: _Lines, problems: list[Problem], where: tuple[Any, ...]
) -> None:
    seen: set[str] = set()
    for rule in rules:
        if rule.destination in seen:
            problems.append(Problem(rule.line, f"{rule.destination} is written twice"))
        seen.add(rule.destination)
    for rule in rules:
        prefix = rule.destination + "."
        child = next((other for other in seen if other.startswith(prefix)), None)
        if child is not None:
            problems.append(
                Problem(
                    rule.line,
                    f"{rule.destination} is a parent of {child}: it cannot be both a value and an object",
                )
            )


def _tests(data: Any, lines: _Lines, problems: list[Problem]) -> tuple[MappingTest, ...]:
    if not isinstance(data, list):
        problems.append(
            Problem(lines("tests"), "tests must be a list of {push, expect} or {push, invalid: true}")
        )
        return ()
    out = []
    for i, spec in enumerate(data):
        where = ("tests", i)
        if not isinstance(spec, dict) or not isinstance(spec.get("push"), dict):
            problems.append(Problem(lines(*where), "a test needs a push (an object)"))
            continue
        invalid = spec.get("invalid") is True
        expect = spec.get("expect")
        if invalid == isinstance(expect, dict):
            problems.append(
                Problem(lines(*where), "a test needs either expect (the xdmEntity) or invalid: true")
            )
            continue
        out.append(
            MappingTest(spec["push"], expect if isinstance(expect, dict) else None, invalid, lines(*where))
        )
    return tuple(out)


def flatten(raw: MappingABC[str, Any]) -> dict[str, Any]:
    """Every leaf of a push by dotted path, nested or flat-dotted alike (objects are walked)."""
    out: dict[str, Any] = {}
    stack: list[tuple[str, MappingABC[str, Any]]] = [("", raw)]
    while stack:
        prefix, node = stack.pop()
        for key, value in node.items():
            if isinstance(value, dict):
                stack.append((f"{prefix}{key}.", value))
            else:
                out[f"{prefix}{key}"] = value
    return out


# --- the running mapping ----------------------------------------------------------------------

#: How often a worker looks at MAPPING_FILE for a change (seconds); a change is live within 10 s.
RELOAD_CHECK_SECONDS = 2.0


def for_settings(settings: Settings) -> Mapping:
    """The mapping ``settings`` name (MAPPING_FILE, else the default), tenant resolved; MappingError."""
    return unresolved_for_settings(settings).resolve(settings.aep_tenant_id or "tenant")


def unresolved_for_settings(settings: Settings) -> Mapping:
    """The mapping ``settings`` name, its destinations still under ``_{tenant}``; MappingError."""
    return load(settings.mapping_file) if settings.mapping_file else default(settings.identity_namespace)


def config_error(exc: MappingError) -> ConfigError:
    """A refused mapping as the one-line configuration error a process stops with."""
    return ConfigError(f"MAPPING_FILE {'; '.join(exc.lines())}")


class Active:
    """The mapping a worker process runs: reloaded when MAPPING_FILE changes, kept when a change is bad.

    :meth:`current` is called per batch; it looks at the file's size and modification time at most
    every :data:`RELOAD_CHECK_SECONDS`. A changed file that fails the checks is refused with an
    ERROR line and ``rainbridge_mapping_reloads_total{outcome="refused"}``; the previous mapping
    keeps running until a good file replaces it.
    """

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._mapping = for_settings(settings)
        self._stamp = self._file_stamp()
        self._refused: tuple[float, int] | None = None
        self._next_check = clock() + RELOAD_CHECK_SECONDS

    def current(self) -> Mapping:
        """The mapping to use now."""
        if self._settings.mapping_file and self._clock() >= self._next_check:
            self._next_check = self._clock() + RELOAD_CHECK_SECONDS
            stamp = self._file_stamp()
            if stamp not in (self._stamp, self._refused):
                self._reload(stamp)
        return self._mapping

    def announce(self, client: redis.Redis, consumer: str) -> None:
        """Tell ``rainbridge status`` which mapping this process runs (one HSET per drain)."""
        mapping = self.current()
        client.hset(keys.MAPPINGS, consumer, f"{mapping.digest} {int(time.time() * 1000)} {mapping.source}")

    def _reload(self, stamp: tuple[float, int] | None) -> None:
        try:
            mapping = for_settings(self._settings)
        except MappingError as exc:
            self._refused = stamp
            log.error(
                "mapping %s refused, still running %s: %s",
                self._settings.mapping_file,
                self._mapping.digest,
                "; ".join(exc.lines()),
            )
            metrics.inc(metrics.MAPPING_RELOADS, outcome="refused")
            return
        self._stamp, self._refused = stamp, None
        if mapping.digest != self._mapping.digest:
            log.info(
                "mapping %s reloaded: %s -> %s",
                self._settings.mapping_file,
                self._mapping.digest,
                mapping.digest,
            )
            metrics.inc(metrics.MAPPING_RELOADS, outcome="loaded")
        self._mapping = mapping

    def _file_stamp(self) -> tuple[float, int] | None:
        if not self._settings.mapping_file:
            return None
        try:
            stat = os.stat(self._settings.mapping_file)
        except OSError:
            return None
        return (stat.st_mtime, stat.st_size)


def forget_gone(client: redis.Redis, idle_ms: int = 3600 * 1000) -> int:
    """Drop the mapping reports of processes silent for ``idle_ms`` (they are gone); how many."""
    now = int(time.time() * 1000)
    reports = cast(dict[str, str], client.hgetall(keys.MAPPINGS))
    gone = []
    for consumer, value in reports.items():
        seen = value.split(" ", 2)[1] if value.count(" ") >= 1 else ""
        if not seen.isdigit() or now - int(seen) > idle_ms:
            gone.append(consumer)
    return int(client.hdel(keys.MAPPINGS, *gone)) if gone else 0


@functools.lru_cache(maxsize=8)
def cached_for_settings(settings: Settings) -> Mapping:
    """:func:`for_settings`, compiled once per settings (for callers with no :class:`Active`)."""
    return for_settings(settings)
