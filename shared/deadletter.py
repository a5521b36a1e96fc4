"""The dead-letter stream: what could not be delivered, with the reason, kept for a retention time."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import redis

from shared import keys
from shared.records import LetterRecord
from shared.settings import Settings


class Reason(StrEnum):
    """Why a push was dead-lettered: stored in each letter, the ``reason`` metric label, a CLI filter."""

    INVALID_PAYLOAD = "invalid_payload"
    EVENT_TOO_LARGE = "event_too_large"
    XDM_INVALID = "xdm_invalid"
    AEP_REJECTED = "aep_rejected"
    DELIVERY_EXHAUSTED = "delivery_exhausted"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, kw_only=True)
class DeadLetter(LetterRecord):
    """One dead-letter entry as read back from Redis: the stored record and its stream id."""

    id: str

    @property
    def deadlettered_ms(self) -> int:
        """When it was dead-lettered: the stream id's time part."""
        return int(self.id.split("-", 1)[0])

    @property
    def parsed_detail(self) -> Any:
        """The detail as the JSON it was written as (a letter from elsewhere may hold plain text)."""
        try:
            return json.loads(self.detail)
        except ValueError:
            return self.detail

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict[str, str]) -> DeadLetter:
        """Parse a stream entry."""
        return cls(**vars(LetterRecord.parse(fields)), id=entry_id)


def retention_minid(settings: Settings, now_ms: int | None = None) -> str:
    """The oldest stream id to keep: older dead letters are trimmed as new ones arrive."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return str(now_ms - settings.deadletter_retention_days * 86_400_000)


def read_all(client: redis.Redis, count: int | None = None) -> list[DeadLetter]:
    """Dead letters, oldest first."""
    entries = cast(list[tuple[str, dict[str, str]]], client.xrange(keys.DEADLETTER, count=count))
    return [DeadLetter.from_entry(entry_id, fields) for entry_id, fields in entries]


def reconcile_counts(client: redis.Redis, chunk: int = 1000) -> bool:
    """Recount the letters by reason when the kept counts disagree with the stream; True if it did.

    The scripts keep the counts exact; this catches a hash lost or never made (a Redis restored
    from an older backup, letters written before the counts existed). XLEN is O(1), so the check
    is cheap; a recount reads the letters in chunks and is repeated by the next check if letters
    came or went meanwhile.
    """
    counts = cast(dict[str, str], client.hgetall(keys.DEADLETTER_COUNTS))
    if sum(int(n) for n in counts.values()) == int(client.xlen(keys.DEADLETTER)) and all(
        int(n) >= 0 for n in counts.values()
    ):
        return False
    tally: dict[str, int] = {}
    start = "-"
    while True:
        entries = cast(
            list[tuple[str, dict[str, str]]], client.xrange(keys.DEADLETTER, min=start, count=chunk)
        )
        for _, fields in entries:
            tally[fields.get("reason", "")] = tally.get(fields.get("reason", ""), 0) + 1
        if len(entries) < chunk:
            break
        start = f"({entries[-1][0]}"
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(keys.DEADLETTER_COUNTS)
        if tally:
            pipe.hset(keys.DEADLETTER_COUNTS, mapping={reason: str(n) for reason, n in tally.items()})
        pipe.execute()
    return True
