"""The push → XDM mapping as data: which push field lands where under the tenant object, as what type.

Only the table decides what goes under ``_<tenant>`` (docs/architecture.md); the transform walks it and
holds no per-field code. The structural fields of the event (``_id``, ``timestamp``, ``eventType``,
``identityMap``) are not in the table: their shape is fixed by AEP, not by the operator's schema.
Converters are named so that a table read from a file can refer to them (:data:`CONVERTERS`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.push import PUSH_FIELDS, as_integer, as_text

#: Turns a validated push value into the value of the XDM field; raises ValueError if it cannot.
Converter = Callable[[Any], Any]


def text(value: Any) -> str:
    """The value as an XDM string (an integer becomes its decimal form)."""
    return as_text(value)


def integer(value: Any) -> int:
    """The value as an XDM integer (32-bit); a numeric string is parsed."""
    return as_integer(value)


#: Converters by the name a configured table uses.
CONVERTERS: dict[str, Converter] = {"text": text, "integer": integer}


@dataclass(frozen=True, slots=True)
class FieldMap:
    """One row: push field ``source`` (dotted) goes to ``target`` (dotted, under the tenant object)."""

    source: str
    target: str
    convert: Converter = text
    #: ``target`` split once, so the transform does not split it per push.
    parents: tuple[str, ...] = field(init=False, repr=False, compare=False)
    leaf: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        *parents, leaf = self.target.split(".")
        if not all(parents) or not leaf:
            raise ValueError(f"mapping target {self.target!r} has an empty path segment")
        # The dataclass is frozen; these two are derived once, here.
        object.__setattr__(self, "parents", tuple(parents))
        object.__setattr__(self, "leaf", leaf)


def check_table(rows: Iterable[FieldMap], sources: Collection[str] = PUSH_FIELDS.keys()) -> None:
    """Raise ValueError if a row reads an unknown push field or two rows' targets collide."""
    targets: set[str] = set()
    for row in rows:
        if row.source not in sources:
            raise ValueError(f"mapping source {row.source!r} is not a push field")
        if row.target in targets:
            raise ValueError(f"mapping target {row.target!r} is written by two rows")
        targets.add(row.target)
    # A target that is another's parent would have to be both a value and an object.
    for target in targets:
        prefix = target + "."
        clash = next((other for other in targets if other.startswith(prefix)), None)
        if clash is not None:
            raise ValueError(f"mapping target {target!r} is a parent of {clash!r}")


#: The tenant object mirrors RainFocus's recommended schema, field for field.
MAPPING: tuple[FieldMap, ...] = (
    FieldMap("transmissionId", "transmissionId", text),
    FieldMap("event.name", "event.name", text),
    FieldMap("attendee.registered", "attendee.registered", text),
    FieldMap("attendee.attendeeId", "attendee.attendeeId", text),
    FieldMap("attendee.externalId", "attendee.externalId", text),
    FieldMap("attendee.clientId", "attendee.clientId", text),
    # The identity: left out in Email_LC_SHA256 mode, whatever its target (see transform).
    FieldMap("attendee.email", "attendee.email", text),
    FieldMap("exhibitor.exhibitorId", "exhibitor.exhibitorId", text),
    FieldMap("exhibitor.externalId", "exhibitor.externalId", text),
    FieldMap("exhibitor.name", "exhibitor.name", text),
    FieldMap("lead.leadId", "lead.leadId", text),
    FieldMap("lead.note", "lead.note", text),
    FieldMap("session.sessionId", "session.sessionId", text),
    FieldMap("session.externalId", "session.externalId", text),
    FieldMap("session.code", "session.code", text),
    FieldMap("session.title", "session.title", text),
    FieldMap("session.length", "session.length", integer),
    FieldMap("sessiontime.sessiontimeId", "sessiontime.sessiontimeId", text),
    FieldMap("sessiontime.startTime", "sessiontime.startTime", text),
    FieldMap("sessiontime.endTime", "sessiontime.endTime", text),
    FieldMap("sessiontime.room", "sessiontime.room", text),
)

check_table(MAPPING)
