"""The three stream records, each defined once: its fields in Redis and the values scripts take.

Every writer, Python or Lua, goes through these classes. The Lua scripts never spell a field
name: they get the names once per call (:func:`script_header`) and each entry's values in the
same order (``values()``), and build ``XADD key * name value ...`` from them. All entries of a
stream then share one field list, so Redis stores the names once per stream node.

- inbox (``rainbridge:inbox``): a push as it was received, written by the receiver and by replay;
- outbox (``rainbridge:outbox``): an AEP message ready to send, written by the ingest hand-off;
- dead letters (``rainbridge:deadletter``): what could not be delivered, and why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

#: A record's fields, name to text; typed loosely because redis-py's ``xadd`` takes an invariant dict.
Fields: TypeAlias = dict[Any, Any]


def _int(text: str | None, default: int) -> int:
    return int(text) if text and text.isdigit() else default


def script_header(names: Sequence[str]) -> list[str | int]:
    """How a script learns a record's field names: their count, then the names."""
    return [len(names), *names]


@dataclass(frozen=True)
class InboxRecord:
    """A push as received: its JSON text, the receipt of its request, and replay marks."""

    FIELDS: ClassVar[tuple[str, ...]] = ("push", "receipt", "replay", "receivedMs")

    push: str
    receipt: str = ""
    #: A replayed dead letter: its dedupe claim is renewed, not refused as a repeat.
    replay: bool = False
    #: A replayed dead letter keeps the time it was first received; a new push has none (the
    #: entry's id is its receipt time).
    received_ms: int | None = None

    def values(self) -> list[str]:
        """The field values, in :attr:`FIELDS` order."""
        received = "" if self.received_ms is None else str(self.received_ms)
        return [self.push, self.receipt, "1" if self.replay else "", received]

    def fields(self) -> Fields:
        """The fields as stored: a new push has only ``push`` and ``receipt`` (less to keep)."""
        stored = dict(zip(self.FIELDS, self.values(), strict=True))
        if not self.replay and self.received_ms is None:
            del stored["replay"], stored["receivedMs"]
        return stored

    def flat(self) -> list[str]:
        """:meth:`fields` as ``name, value, ...``, the way XADD takes them."""
        if not self.replay and self.received_ms is None:  # the receiver's path: no dict to build
            return ["push", self.push, "receipt", self.receipt]
        return [text for pair in self.fields().items() for text in pair]

    @classmethod
    def parse(cls, fields: Mapping[str, str], entry_ms: int) -> InboxRecord:
        """Read an inbox entry; ``entry_ms`` (its id's time) stands in for a missing receipt time."""
        return cls(
            push=fields.get("push", ""),
            receipt=fields.get("receipt", ""),
            replay=fields.get("replay") == "1",
            received_ms=_int(fields.get("receivedMs"), entry_ms),
        )


@dataclass(frozen=True)
class OutboxRecord:
    """An AEP message ready to send, with what delivery needs to log, dead-letter and time it."""

    FIELDS: ClassVar[tuple[str, ...]] = (
        "message",
        "transmissionId",
        "eventType",
        "receivedMs",
        "push",
        "mapping",
    )

    message: str
    transmission_id: str
    event_type: str
    received_ms: int
    push: str
    #: The content hash of the mapping that made ``message`` (``rainbridge mapping``).
    mapping: str = ""

    def values(self) -> list[str]:
        """The field values, in :attr:`FIELDS` order."""
        return [
            self.message,
            self.transmission_id,
            self.event_type,
            str(self.received_ms),
            self.push,
            self.mapping,
        ]

    def fields(self) -> Fields:
        """The fields as a stream entry has them."""
        return dict(zip(self.FIELDS, self.values(), strict=True))

    @classmethod
    def parse(cls, fields: Mapping[str, str], entry_ms: int) -> OutboxRecord:
        """Read an outbox entry; ``entry_ms`` (its id's time) stands in for a missing receipt time."""
        return cls(
            message=fields.get("message", ""),
            transmission_id=fields.get("transmissionId", ""),
            event_type=fields.get("eventType", ""),
            received_ms=_int(fields.get("receivedMs"), entry_ms),
            push=fields.get("push", ""),
            mapping=fields.get("mapping", ""),
        )


@dataclass(frozen=True)
class LetterRecord:
    """A dead letter as stored: why, the push, the XDM message if there was one, and its history."""

    #: ``reason`` comes first: the scripts keep per-reason counts and find it there.
    FIELDS: ClassVar[tuple[str, ...]] = (
        "reason",
        "detail",
        "push",
        "xdm",
        "transmissionId",
        "eventType",
        "attempts",
        "receivedMs",
        "mapping",
    )

    reason: str
    #: JSON text: the validation errors, AEP's answer, or a sentence.
    detail: str
    push: str
    xdm: str
    transmission_id: str
    event_type: str
    attempts: int
    received_ms: int
    #: The content hash of the mapping in force when it was dead-lettered.
    mapping: str = ""

    def values(self) -> list[str]:
        """The field values, in :attr:`FIELDS` order."""
        return [
            self.reason,
            self.detail,
            self.push,
            self.xdm,
            self.transmission_id,
            self.event_type,
            str(self.attempts),
            str(self.received_ms),
            self.mapping,
        ]

    def fields(self) -> Fields:
        """The fields as a stream entry has them."""
        return dict(zip(self.FIELDS, self.values(), strict=True))

    @classmethod
    def parse(cls, fields: Mapping[str, str]) -> LetterRecord:
        """Read a dead-letter entry."""
        return cls(
            reason=fields.get("reason", ""),
            detail=fields.get("detail", ""),
            push=fields.get("push", ""),
            xdm=fields.get("xdm", ""),
            transmission_id=fields.get("transmissionId", ""),
            event_type=fields.get("eventType", ""),
            attempts=_int(fields.get("attempts"), 0),
            received_ms=_int(fields.get("receivedMs"), 0),
            mapping=fields.get("mapping", ""),
        )
