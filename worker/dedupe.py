"""Drop repeats by transmissionId, atomically with the hand-off from inbox to outbox.

One Lua script, run once per batch, does for every inbox entry: acknowledge it (only if still
pending, so two workers racing over a reclaimed entry cannot both hand it off), then either
claim its transmissionId and append the AEP message to the outbox, count it as a repeat, or
write its dead letter; finally it deletes the handled inbox entries. Redis runs a script as one
unit and AOF logs it as one transaction, so a crash leaves each entry either untouched and
pending (a live worker takes it over) or fully handed off. Never both, never lost.

A claimed id is remembered for DEDUPE_TTL_SECONDS as a 16-byte member of one of DEDUPE_BUCKETS
sorted sets, scored with the second it is forgotten (``scripts/dedupe.lua``). Sets of up to 128
members are listpacks in Redis: about 30 bytes per id all told, against about 150 for a key per
id. The member is the whole id, so the check is exact: a new id is never taken for a repeat.
An id stops counting at its TTL; its bytes go at housekeeping's hourly sweep of its set, or with
the whole set an hour after the set's last write.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from shared import deadletter, keys
from shared.records import LetterRecord, OutboxRecord, script_header
from shared.settings import Settings
from worker import scripts

_HANDOFF = scripts.load("records", "deadletters", "dedupe", "handoff")
_REMEMBER = scripts.load("dedupe", "dedupe_remember")
_SWEEP = scripts.load("dedupe", "dedupe_sweep")

#: Housekeeping runs about once a minute; a sweep of this share of the sets each time covers
#: them all within the hour.
SWEEP_SHARE = 1 / 50
#: Sets swept per script (about a millisecond of Redis each).
SWEEP_CHUNK = 2000


@dataclass(frozen=True)
class Ready:
    """An inbox entry that became an AEP message, ready for the outbox."""

    entry_id: str
    #: The event's id (SHA-256 hex of its transmissionId): what dedupe remembers.
    event_id: str
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
        args: list[str | int | bytes] = [
            keys.INBOX_GROUP,
            self._settings.dedupe_ttl_seconds,
            deadletter.retention_minid(self._settings),
            *script_header(OutboxRecord.FIELDS),
            *script_header(LetterRecord.FIELDS),
        ]
        buckets = self._settings.dedupe_buckets
        for item in items:
            if isinstance(item, Ready):
                bucket, member = keys.dedupe_slot(item.event_id, buckets)
                legacy = keys.seen(item.event_id)
                args += ["o", item.entry_id, bucket, member, legacy, "1" if item.replay else ""]
                args += item.record.values()
            else:
                args += ["d", item.entry_id, "", "", "", "", *item.letter.values()]
        sent, repeats, dead = self._script(
            keys=[keys.INBOX, keys.OUTBOX, keys.DEADLETTER, keys.DEADLETTER_COUNTS], args=args
        )
        return HandoffResult(int(sent), int(repeats), int(dead))


def remember(client: redis.Redis, settings: Settings, event_ids: list[str]) -> int:
    """Claim ``event_ids`` as the hand-off would, without one; how many were new."""
    args: list[str | int | bytes] = [settings.dedupe_ttl_seconds]
    for event_id in event_ids:
        args += keys.dedupe_slot(event_id, settings.dedupe_buckets)
    return int(client.eval(_REMEMBER, 0, *args))


def remembered(client: redis.Redis, settings: Settings, event_id: str) -> bool:
    """True while ``event_id`` counts as seen (a new push with it would be a repeat)."""
    bucket, member = keys.dedupe_slot(event_id, settings.dedupe_buckets)
    until = client.zscore(bucket, member)
    if until is not None and until >= float(client.time()[0]):
        return True
    return bool(client.exists(keys.seen(event_id)))


def sweep(client: redis.Redis, settings: Settings) -> int:
    """Drop expired ids from the next share of the sets (housekeeping); how many went."""
    share = max(1, int(settings.dedupe_buckets * SWEEP_SHARE))
    dropped = 0
    # In scripts of at most SWEEP_CHUNK sets, so a big fleet's sweep never holds Redis for long.
    for start in range(0, share, SWEEP_CHUNK):
        count = min(SWEEP_CHUNK, share - start)
        dropped += int(
            client.eval(_SWEEP, 1, keys.DEDUPE_SWEEP, keys.DEDUPE_PREFIX, count, settings.dedupe_buckets)
        )
    return dropped
