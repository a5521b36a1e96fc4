"""Drop repeats by transmissionId, atomically with the hand-off from inbox to outbox.

One Lua script, run once per batch, does for every inbox entry: acknowledge it (only if still
pending, so two workers racing over a reclaimed entry cannot both hand it off), then either
claim its transmissionId (``SET NX EX``) and append the AEP message to the outbox, count it as a
repeat, or write its dead letter; finally it deletes the handled inbox entries. Redis runs a
script as one unit and AOF logs it as one transaction, so a crash leaves each entry either
untouched and pending (a live worker takes it over) or fully handed off. Never both, never lost.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from shared import deadletter, keys
from shared.records import LetterRecord, OutboxRecord, script_header
from shared.settings import Settings
from worker import scripts

_HANDOFF = scripts.load("records", "deadletters", "handoff")


@dataclass(frozen=True)
class Ready:
    """An inbox entry that became an AEP message, ready for the outbox."""

    entry_id: str
    seen_key: str
    replay: bool
    record: OutboxRecord
    #: Source paths of the push that no mapping entry reads (counted by worker.unmapped).
    unmapped: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Rejected:
    """An inbox entry that cannot become an AEP message: it goes to the dead-letter stream."""

    entry_id: str
    letter: LetterRecord

    @property
    def reason(self) -> deadletter.Reason:
        """Why it cannot be sent."""
        return deadletter.Reason(self.letter.reason)

    @property
    def detail(self) -> str:
        """What is wrong, as JSON text."""
        return self.letter.detail


@dataclass(frozen=True)
class HandoffResult:
    """What the hand-off did; entries another worker had already handed off are in none of these."""

    sent: int
    repeats: int
    dead: int


class Handoff:
    """The registered hand-off script, bound to one Redis client."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._script = client.register_script(_HANDOFF)
        self._settings = settings

    def __call__(self, items: list[Ready | Rejected]) -> HandoffResult:
        """Hand off a batch atomically; see the module docstring."""
        if not items:
            return HandoffResult(0, 0, 0)
        args: list[str | int] = [
            keys.INBOX_GROUP,
            self._settings.dedupe_ttl_seconds,
            deadletter.retention_minid(self._settings),
            *script_header(OutboxRecord.FIELDS),
            *script_header(LetterRecord.FIELDS),
        ]
        for item in items:
            if isinstance(item, Ready):
                args += ["o", item.entry_id, item.seen_key, "1" if item.replay else "", *item.record.values()]
            else:
                args += ["d", item.entry_id, "", "", *item.letter.values()]
        sent, repeats, dead = self._script(
            keys=[keys.INBOX, keys.OUTBOX, keys.DEADLETTER, keys.DEADLETTER_COUNTS], args=args
        )
        return HandoffResult(int(sent), int(repeats), int(dead))
