"""Remembered transmissionIds: exact, compact (at most 60 bytes each at a million), forgotten on time."""

from __future__ import annotations

import dataclasses
import json
import os
import time

import pytest
import redis

from devkit import samples
from shared import keys
from shared.settings import Settings
from worker import dedupe, ingest
from worker.transform import event_id


def random_ids(n: int) -> list[str]:
    return [os.urandom(16).hex() for _ in range(n)]


def remember_all(client: redis.Redis, settings: Settings, ids: list[str]) -> int:
    return sum(dedupe.remember(client, settings, ids[i : i + 10_000]) for i in range(0, len(ids), 10_000))


@pytest.mark.slow
def test_a_million_ids_take_at_most_60_bytes_each_and_no_new_id_is_taken_for_a_repeat(
    redis_client: redis.Redis, settings: Settings
) -> None:
    before = int(redis_client.info("memory")["used_memory"])
    first = random_ids(1_000_000)

    # Every one of a million new ids is new
    assert remember_all(redis_client, settings, first) == 1_000_000
    per_id = (int(redis_client.info("memory")["used_memory"]) - before) / 1_000_000
    print(f"\ndedupe: {per_id:.1f} bytes of Redis per remembered id at 1,000,000 ids")
    assert per_id <= 60

    # Another million new ids: not one is dropped as a repeat (no false positives)
    assert remember_all(redis_client, settings, random_ids(1_000_000)) == 1_000_000
    # and every one of the first million is a repeat now
    assert remember_all(redis_client, settings, first) == 0


def test_an_id_counts_until_its_ttl_and_its_bytes_go_by_the_next_hour(
    redis_client: redis.Redis, settings: Settings
) -> None:
    short = dataclasses.replace(settings, dedupe_ttl_seconds=1)
    ids = random_ids(100)
    assert dedupe.remember(redis_client, short, ids) == 100
    assert all(dedupe.remembered(redis_client, short, i) for i in ids)
    assert dedupe.remember(redis_client, short, ids) == 0
    # every set it touched goes by itself an hour after its last write at most
    buckets = {keys.dedupe_slot(i, short.dedupe_buckets)[0] for i in ids}
    assert all(0 < redis_client.ttl(bucket) <= 1 + 3600 for bucket in buckets)

    time.sleep(2.1)

    # Past the TTL the id is new again (exactly: by its score, not by when the bytes go)
    assert not any(dedupe.remembered(redis_client, short, i) for i in ids)
    # and housekeeping's sweeps (one a minute, a fiftieth of the sets each) drop every one within
    # 51 of them (wherever the last sweep stopped), each set once
    dropped = sum(dedupe.sweep(redis_client, short) for _ in range(51))
    assert dropped == 100
    assert sum(redis_client.zcard(bucket) for bucket in buckets) == 0


def test_ids_remembered_by_an_earlier_version_still_count_as_repeats(
    redis_client: redis.Redis, settings: Settings
) -> None:
    # Given a push whose id an earlier version remembered as a key of its own
    push = samples.push()
    redis_client.set(keys.seen(event_id(push["transmissionId"])), "1", ex=3600)
    redis_client.xadd(keys.INBOX, {"push": json.dumps(push), "receipt": "r"})

    summary = ingest.drain(redis_client, settings, "c1", budget_s=0.2)

    assert (summary.sent, summary.repeats) == (0, 1)
