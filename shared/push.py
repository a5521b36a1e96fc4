"""The push RainFocus sends: its fields, their types and how each is normalised.

The fields are listed in docs/architecture.md ("The push").

A push may carry its groups nested (``{"attendee": {"email": ...}}``), as flat dotted keys
(``{"attendee.email": ...}``) or as a mix of both. :func:`fold` turns any of these into the one flat
form keyed by dotted path, and :class:`PushSchema` loads that flat form. The schema is flat on
purpose: its error messages are then keyed by the dotted path the sender can search for, and one
flat load is cheaper than a nested schema per group.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from marshmallow import EXCLUDE, Schema, ValidationError, fields

#: Longest string accepted in any field; a longer value (a 1 MB lead note) makes the push invalid.
MAX_STRING_LENGTH = 4096

#: XDM ``integer`` is a 32-bit signed integer; AEP rejects values outside it.
XDM_INT_MIN = -(2**31)
XDM_INT_MAX = 2**31 - 1

#: The field holding the push's primary identity.
IDENTITY_FIELD = "attendee.email"

MESSAGES = {
    "too_long": f"Longer than the maximum of {MAX_STRING_LENGTH} characters (got {{length}}).",
    "not_object": "Not a valid object.",
    "conflict": "Given both nested and as a dotted key, with different values.",
    "not_a_push": "Invalid input type: a push must be a JSON object.",
}

# ASCII only: re's \d would also accept other scripts' digits, which int() happily converts.
_INTEGER_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+")
_TIMESTAMP_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?"
    r"(?:([Zz])|([+-])([0-9]{2})(?::?([0-9]{2}))?)?",
    re.ASCII,
)


def is_absent(value: Any) -> bool:
    """True for values a push uses to mean "not given": null, "" and whitespace-only strings."""
    return value is None or (type(value) is str and (not value or value.isspace()))


def as_text(value: Any) -> str:
    """A string as given, or a JSON number as a string (123 and 123.0 → "123"); raise ValueError else."""
    if isinstance(value, str):
        return value
    # type() rather than isinstance(): bool is an int subclass, and a boolean id is a sender bug.
    if type(value) is int:
        return str(value)
    if type(value) is float and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    raise ValueError(value)


def parse_integer(value: Any) -> int:
    """An int, or a string holding one in ASCII digits (" 90 " → 90); raise ValueError otherwise."""
    if type(value) is int:
        return value
    if isinstance(value, str):
        digits = value.strip()
        if _INTEGER_RE.fullmatch(digits):
            return int(digits)
    # Floats (even 90.0) and booleans are refused: the sender has a typing bug worth seeing.
    raise ValueError(value)


def as_integer(value: Any) -> int:
    """:func:`parse_integer` limited to XDM's 32-bit integer range; raise ValueError outside it."""
    result = parse_integer(value)
    if not XDM_INT_MIN <= result <= XDM_INT_MAX:
        raise ValueError(value)
    return result


def xdm_time(moment: datetime) -> str:
    """An aware datetime in UTC, in XDM's form ``YYYY-MM-DDTHH:MM:SS.sssZ`` (milliseconds truncated)."""
    if moment.utcoffset():
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


_T = TypeVar("_T")


class _Scalar(fields.Field[_T]):
    """Base of the push's fields: one JSON scalar each, normalised by the subclass's ``convert``."""

    # Read from the class by marshmallow itself (merged along the class hierarchy); never mutated.
    default_error_messages = {"too_long": MESSAGES["too_long"]}  # noqa: RUF012

    def convert(self, value: Any) -> _T:
        """The normalised value, or a ``ValidationError`` from ``make_error``."""
        raise NotImplementedError

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> _T:
        return self.convert(value)

    def _validate(self, value: Any) -> None:
        # Field._validate builds a composite validator on every call; these fields rarely have any.
        if self.validators:
            super()._validate(value)


def _check_length(field: fields.Field[Any], value: str) -> None:
    if len(value) > MAX_STRING_LENGTH:
        raise field.make_error("too_long", length=len(value))
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (from a "\ud800" escape) cannot be stored or sent as UTF-8.
        raise field.make_error("invalid") from None


class Text(_Scalar[str]):
    """A string kept verbatim; a JSON number becomes its string form (ids are often numeric)."""

    # Merged with _Scalar's by marshmallow; never mutated.
    default_error_messages = {  # noqa: RUF012
        "invalid": "Not a valid string.",
    }

    def convert(self, value: Any) -> str:
        try:
            result = as_text(value)
        except ValueError:
            raise self.make_error("invalid") from None
        _check_length(self, result)
        return result


class Integer(_Scalar[int]):
    """An integer within XDM's 32-bit range, given as a JSON integer or a numeric string."""

    # Merged with _Scalar's by marshmallow; never mutated.
    default_error_messages = {  # noqa: RUF012
        "invalid": "Not a valid integer.",
        "range": "Must be between {minimum} and {maximum}.",
    }

    def __init__(self, *, minimum: int = XDM_INT_MIN, maximum: int = XDM_INT_MAX, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.minimum = minimum
        self.maximum = maximum

    def convert(self, value: Any) -> int:
        if isinstance(value, str):
            _check_length(self, value)
        try:
            result = parse_integer(value)
        except ValueError:
            raise self.make_error("invalid") from None
        if not self.minimum <= result <= self.maximum:
            raise self.make_error("range", minimum=self.minimum, maximum=self.maximum)
        return result


class Email(_Scalar[str]):
    """An email address, trimmed and lower-cased; only its shape is checked (one @, no spaces)."""

    # Merged with _Scalar's by marshmallow; never mutated.
    default_error_messages = {  # noqa: RUF012
        "invalid": "Not a valid email address.",
    }

    def convert(self, value: Any) -> str:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        _check_length(self, value)
        email = value.strip().lower()
        if not _EMAIL_RE.fullmatch(email):
            raise self.make_error("invalid")
        return email


class Timestamp(_Scalar[datetime]):
    """An ISO 8601 date-time with ``Z`` or an offset, returned as an aware datetime in UTC.

    Accepts ``T``, ``t`` or a space between date and time, seconds optional, any number of
    fractional digits (``.`` or ``,``; kept to the microsecond, truncated), and offsets as
    ``Z``/``z``, ``±HH:MM``, ``±HHMM`` or ``±HH``. Python 3.11's ``fromisoformat`` refuses some of
    these (``z``) and accepts forms that are not date-times with a zone (week dates, bare dates), so
    the format is matched here instead.
    """

    # Merged with _Scalar's by marshmallow; never mutated.
    default_error_messages = {  # noqa: RUF012
        "invalid": "Not a valid date-time: expected ISO 8601 such as 2023-04-01T00:41:57.000Z.",
        "naive": "Timestamp must include a timezone (Z or an offset such as +02:00).",
    }

    def convert(self, value: Any) -> datetime:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        _check_length(self, value)
        match = _TIMESTAMP_RE.fullmatch(value.strip())
        if match is None:
            raise self.make_error("invalid")
        year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
        if zulu is None and sign is None:
            raise self.make_error("naive")
        micro = int(fraction[:6].ljust(6, "0")) if fraction else 0
        try:
            moment = datetime(
                int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micro, tzinfo=UTC
            )
            if sign is not None:
                offset_h, offset_m = int(off_h), int(off_m or 0)
                if offset_h > 23 or offset_m > 59:
                    raise ValueError(value)
                offset = timedelta(hours=offset_h, minutes=offset_m)
                moment = moment - offset if sign == "+" else moment + offset
        except (ValueError, OverflowError):
            raise self.make_error("invalid") from None
        return moment


class PushSchema(Schema):
    """The push in flat form (the output of :func:`fold`): each grouped field under its dotted key."""

    class Meta:
        # Unknown fields are not mapped, and not an error either: RainFocus may add fields.
        unknown = EXCLUDE

    transmissionId = Text(required=True)
    eventType = Text(required=True)
    timestamp = Timestamp(required=True)
    event_name = Text(data_key="event.name")
    attendee_registered = Text(data_key="attendee.registered")
    attendee_attendeeId = Text(data_key="attendee.attendeeId")
    attendee_externalId = Text(data_key="attendee.externalId")
    attendee_clientId = Text(data_key="attendee.clientId")
    attendee_email = Email(required=True, data_key=IDENTITY_FIELD)
    exhibitor_exhibitorId = Text(data_key="exhibitor.exhibitorId")
    exhibitor_externalId = Text(data_key="exhibitor.externalId")
    exhibitor_name = Text(data_key="exhibitor.name")
    lead_leadId = Text(data_key="lead.leadId")
    lead_note = Text(data_key="lead.note")
    session_sessionId = Text(data_key="session.sessionId")
    session_externalId = Text(data_key="session.externalId")
    session_code = Text(data_key="session.code")
    session_title = Text(data_key="session.title")
    # A session's length in minutes: a negative one is a sender bug, not an event to record.
    session_length = Integer(minimum=0, data_key="session.length")
    sessiontime_sessiontimeId = Text(data_key="sessiontime.sessiontimeId")
    sessiontime_startTime = Text(data_key="sessiontime.startTime")
    sessiontime_endTime = Text(data_key="sessiontime.endTime")
    sessiontime_room = Text(data_key="sessiontime.room")


#: Every field of the push by its dotted path, e.g. ``"session.length"`` → its Integer field.
PUSH_FIELDS: dict[str, fields.Field[Any]] = {
    field.data_key or name: field for name, field in PushSchema().load_fields.items()
}

#: The field groups (the part before the dot); each may also be sent as a nested object.
GROUPS = tuple(dict.fromkeys(path.split(".", 1)[0] for path in PUSH_FIELDS if "." in path))

# (dotted path, group, name in group) for every grouped field; built once, walked per push.
_GROUPED = tuple((path, *path.split(".", 1)) for path in PUSH_FIELDS if "." in path)
_TOP_LEVEL = tuple(path for path in PUSH_FIELDS if "." not in path)


def fold(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The push's known fields in flat dotted form, absent values dropped, plus any errors found.

    Errors are for a group that is not an object, and for a field given both nested and dotted
    with values that differ once normalised (90 and "90" agree).
    """
    flat: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for path in _TOP_LEVEL:
        value = raw.get(path)
        if not is_absent(value):
            flat[path] = value
    groups: dict[str, Mapping[str, Any]] = {}
    for name in GROUPS:
        group = raw.get(name)
        if is_absent(group):
            continue
        if isinstance(group, Mapping):
            groups[name] = group
        else:
            errors[name] = [MESSAGES["not_object"]]
    for path, group_name, name in _GROUPED:
        value = raw.get(path)
        group = groups.get(group_name)
        nested = None if group is None else group.get(name)
        if is_absent(nested):
            if not is_absent(value):
                flat[path] = value
            continue
        flat[path] = nested
        if not is_absent(value) and not _same(path, nested, value):
            errors[path] = [MESSAGES["conflict"]]
    return flat, errors


def _same(path: str, first: Any, second: Any) -> bool:
    if type(first) is type(second) and first == second:
        return True
    field = PUSH_FIELDS[path]
    try:
        return bool(field.deserialize(first) == field.deserialize(second))
    except ValidationError:
        # One of them does not even load: they cannot be the same value.
        return False
