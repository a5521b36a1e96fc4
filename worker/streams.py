"""Reading Redis streams through consumer groups: new entries, and entries a dead worker held."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """One stream entry."""

    id: str
    fields: dict[str, str]

    @property
    def ms(self) -> int:
        """When the entry was added: the time part of its id."""
        return int(self.id.split("-", 1)[0])


def ensure_group(client: redis.Redis, stream: str, group: str) -> None:
    """Create the consumer group (and the stream) if missing; reading starts at the beginning."""
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def claim_stale(
    client: redis.Redis, stream: str, group: str, consumer: str, *, idle_ms: int, count: int
) -> list[Entry]:
    """Take over entries pending longer than ``idle_ms``: their worker died or hung."""
    if count <= 0:
        return []
    reply = _with_group(
        client, stream, group, lambda: client.xautoclaim(stream, group, consumer, idle_ms, "0-0", count=count)
    )
    claimed, deleted = reply[1], reply[2] if len(reply) > 2 else []
    if deleted:
        # Pending ids whose entries were trimmed away: nothing left to do for them.
        client.xack(stream, group, *deleted)
    entries = [Entry(entry_id, fields) for entry_id, fields in claimed if fields is not None]
    if entries:
        log.info("%s took over %d stale entries of %s", consumer, len(entries), stream)
    return entries


def read_new(
    client: redis.Redis, stream: str, group: str, consumer: str, *, count: int, block_ms: int
) -> list[Entry]:
    """Up to ``count`` entries no consumer has seen, waiting up to ``block_ms`` for the first one."""
    if count <= 0:
        return []
    block = block_ms if block_ms > 0 else None  # BLOCK 0 would mean "forever"
    reply = _with_group(
        client,
        stream,
        group,
        lambda: client.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block),
    )
    if not reply:
        return []
    _, items = reply[0]
    return [Entry(entry_id, fields) for entry_id, fields in items]


def _with_group(client: redis.Redis, stream: str, group: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except redis.ResponseError as exc:
        # The group is gone (first start, or the key was deleted): create it and try once more.
        if "NOGROUP" not in str(exc):
            raise
        ensure_group(client, stream, group)
        return call()


def release(
    client: redis.Redis,
    stream: str,
    group: str,
    consumer: str,
    ids: list[str],
    *,
    claim_idle_ms: int,
    delay_ms: int = 0,
) -> None:
    """Hand entries back for another try in about ``delay_ms`` (at most the claim time).

    The entries stay pending (nothing is lost if we die now); setting their idle time makes
    ``claim_stale`` pick them up once ``delay_ms`` has passed, by whichever worker comes first.
    """
    if ids:
        idle = max(0, claim_idle_ms - delay_ms)
        client.xclaim(stream, group, consumer, 0, list[Any](ids), idle=idle, justid=True)


def delivery_counts(client: redis.Redis, stream: str, group: str, ids: list[str]) -> dict[str, int]:
    """How many times each pending entry has been delivered to a consumer (its attempts)."""
    with client.pipeline(transaction=False) as pipe:
        for entry_id in ids:
            pipe.xpending_range(stream, group, min=entry_id, max=entry_id, count=1)
        replies = pipe.execute()
    return {
        entry_id: int(reply[0]["times_delivered"]) if reply else 1
        for entry_id, reply in zip(ids, replies, strict=True)
    }


def forget_idle_consumers(client: redis.Redis, stream: str, group: str, *, idle_ms: int) -> int:
    """Remove consumers with nothing pending that have been silent for ``idle_ms``.

    Every worker process is a consumer named after its pid, so restarts leave old names behind;
    a consumer with pending entries is kept until those are taken over.
    """
    removed = 0
    try:
        consumers = client.xinfo_consumers(stream, group)
    except redis.ResponseError:
        return 0  # no stream or group yet
    for consumer in consumers:
        if int(consumer["pending"]) == 0 and int(consumer["idle"]) >= idle_ms:
            client.xgroup_delconsumer(stream, group, consumer["name"])
            removed += 1
    return removed
