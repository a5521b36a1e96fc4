"""The batch stage: fill AEP requests from the outbox, bounded by count, bytes and wait time.

The wait is measured from when the oldest message entered the outbox (its stream id), so a
message never waits longer than ``AEP_BATCH_MAX_WAIT_MS`` for companions, whoever reads it.
"""

from __future__ import annotations

import time

import redis

from shared import keys
from shared.records import OutboxRecord
from shared.settings import Settings
from worker import streams

#: Bytes of ``{"messages":[`` and ``]}`` around the messages.
ENVELOPE_BYTES = len('{"messages":[]}')


class Batch:
    """Entries for one AEP request, the request body size they add up to, and their attempts."""

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.entries: list[streams.Entry] = []
        #: Delivery attempts by entry id, this one included (1 for entries read fresh).
        self.attempts: dict[str, int] = {}
        #: Entries out of attempts or time: they go to the dead-letter stream, not to AEP.
        self.exhausted: list[streams.Entry] = []
        self.size = ENVELOPE_BYTES
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self.full = False

    def add(self, entry: streams.Entry) -> bool:
        """Take ``entry`` if it fits; once one does not, the batch is full."""
        entry_size = len(OutboxRecord.parse(entry.fields, entry.ms).message.encode()) + 1  # and its comma
        # A batch always takes its first entry, so an oversized message still gets sent (and refused).
        fits = not self.entries or self.size + entry_size <= self._max_bytes
        if self.full or not fits:
            self.full = True
            return False
        self.entries.append(entry)
        self.size += entry_size
        self.full = len(self.entries) >= self._max_messages
        return True

    @property
    def room(self) -> int:
        """How many more messages the count limit allows."""
        return self._max_messages - len(self.entries)

    @property
    def oldest_ms(self) -> int:
        """When the oldest entry entered the outbox."""
        return min(entry.ms for entry in self.entries)


class Batcher:
    """Reads outbox entries for one consumer and groups them into batches."""

    def __init__(self, client: redis.Redis, settings: Settings, consumer: str) -> None:
        self._redis = client
        self._settings = settings
        self._consumer = consumer
        #: Entries already read (so pending to us) that did not fit the previous batch.
        self.held: list[streams.Entry] = []
        self._held_attempts: dict[str, int] = {}

    def next(self, deadline: float) -> Batch:
        """The next batch; empty when nothing arrived before ``deadline`` (a monotonic time)."""
        s = self._settings
        batch = Batch(s.messages_per_request, s.aep_batch_max_bytes)
        leftovers, self.held = self.held, []
        batch.attempts.update(self._held_attempts)
        self._held_attempts = {}
        self._offer(batch, leftovers)
        stale = streams.claim_stale(
            self._redis,
            keys.OUTBOX,
            keys.OUTBOX_GROUP,
            self._consumer,
            idle_ms=s.pending_claim_seconds * 1000,
            count=batch.room if not batch.full else 0,
        )
        # Entries we hold ourselves can come back from the claim if they idled past the claim time.
        mine = {entry.id for entry in batch.entries} | {entry.id for entry in self.held}
        stale = [entry for entry in stale if entry.id not in mine]
        self._offer(batch, self._sort_out_exhausted(batch, stale))
        while not batch.full:
            if batch.entries:
                block_ms = int(batch.oldest_ms + s.aep_batch_max_wait_ms - time.time() * 1000)
                if block_ms <= 0:
                    # Waited long enough: top up with what is already there, then go.
                    self._offer(batch, self._read(batch.room, 0))
                    break
            else:
                block_ms = int((deadline - time.monotonic()) * 1000)
                if block_ms <= 0:
                    break
            fresh = self._read(batch.room, block_ms)
            if not fresh and batch.entries:
                break
            self._offer(batch, fresh)
        return batch

    def _sort_out_exhausted(self, batch: Batch, stale: list[streams.Entry]) -> list[streams.Entry]:
        """Record the attempts of entries taken over, and set aside those past their limits."""
        if not stale:
            return stale
        s = self._settings
        counts = streams.delivery_counts(self._redis, keys.OUTBOX, keys.OUTBOX_GROUP, [e.id for e in stale])
        oldest_allowed_ms = time.time() * 1000 - s.delivery_max_age_seconds * 1000
        keep = []
        for entry in stale:
            batch.attempts[entry.id] = counts[entry.id]
            received_ms = OutboxRecord.parse(entry.fields, entry.ms).received_ms
            if counts[entry.id] > s.delivery_max_attempts or received_ms < oldest_allowed_ms:
                batch.exhausted.append(entry)
            else:
                keep.append(entry)
        return keep

    def _read(self, count: int, block_ms: int) -> list[streams.Entry]:
        return streams.read_new(
            self._redis, keys.OUTBOX, keys.OUTBOX_GROUP, self._consumer, count=count, block_ms=block_ms
        )

    def _offer(self, batch: Batch, entries: list[streams.Entry]) -> None:
        for entry in entries:
            if self.held or not batch.add(entry):
                self.held.append(entry)
                if entry.id in batch.attempts:
                    self._held_attempts[entry.id] = batch.attempts.pop(entry.id)
