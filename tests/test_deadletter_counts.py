"""Dead-letter counts by reason: kept by the scripts that add and remove letters, so a scrape of
/metrics or `rainbridge status` costs the same with no letters or a hundred thousand."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import redis

from devkit import samples
from shared import deadletter, keys, metrics, status
from shared.settings import Settings
from worker import ingest, replay


def add_invalid(client: redis.Redis, n: int, **push: object) -> None:
    """``n`` pushes that ingest will dead-letter as invalid_payload (no timestamp)."""
    for _ in range(n):
        body = samples.push(**push)
        del body["timestamp"]
        client.xadd(keys.INBOX, {"push": json.dumps(body), "receipt": "r1"})


def truth(client: redis.Redis) -> dict[str, int]:
    """The letters counted the slow way, from the stream itself."""
    return dict(Counter(fields["reason"] for _, fields in client.xrange(keys.DEADLETTER)))


def counted(client: redis.Redis) -> dict[str, int]:
    return dict(status.collect(client)["deadletters"]["by_reason"])


def drain(client: redis.Redis, settings: Settings) -> None:
    while ingest.drain(client, settings, "c1", budget_s=0.1).read:
        pass


def test_writes_replays_and_purges_keep_the_counts_equal_to_the_letters(
    redis_client: redis.Redis, settings: Settings
) -> None:
    # Given 7 pushes dead-lettered by ingest, and a garbled one
    add_invalid(redis_client, 7)
    redis_client.xadd(keys.INBOX, {"push": "{not json", "receipt": "r1"})
    drain(redis_client, settings)
    assert counted(redis_client) == truth(redis_client) == {"invalid_payload": 8}

    # When two are replayed (forced: they are still invalid) and two purged
    letters = deadletter.read_all(redis_client)
    results = list(
        replay.iter_replay(redis_client, settings, letters[:2], dry_run=False, rate=None, force=True)
    )
    assert [r.status for r in results] == ["replayed", "replayed"]
    assert counted(redis_client) == truth(redis_client) == {"invalid_payload": 6}
    assert replay.purge(redis_client, [letters[2].id, letters[3].id, letters[3].id]) == 2
    assert counted(redis_client) == truth(redis_client) == {"invalid_payload": 4}

    # And when the replayed two fail again, they are counted again
    drain(redis_client, settings)
    assert counted(redis_client) == truth(redis_client) == {"invalid_payload": 6}
    assert status.collect(redis_client)["deadletters"]["total"] == redis_client.xlen(keys.DEADLETTER)


def test_letters_past_their_retention_are_trimmed_and_uncounted(
    redis_client: redis.Redis, settings: Settings
) -> None:
    # Given three letters from long ago (an older Redis, say) and counts rebuilt for them
    for n in range(3):
        redis_client.xadd(keys.DEADLETTER, {"reason": "aep_rejected", "detail": "old"}, id=f"1000-{n}")
    assert deadletter.reconcile_counts(redis_client)
    assert counted(redis_client) == {"aep_rejected": 3}

    # When a new letter arrives
    add_invalid(redis_client, 1)
    drain(redis_client, dataclasses.replace(settings, deadletter_retention_days=1))

    # Then the old ones are gone, and so are their counts
    assert counted(redis_client) == truth(redis_client) == {"invalid_payload": 1}


def test_a_lost_count_is_rebuilt_by_housekeeping_and_then_left_alone(
    redis_client: redis.Redis, settings: Settings
) -> None:
    add_invalid(redis_client, 3)
    drain(redis_client, settings)
    redis_client.delete(keys.DEADLETTER_COUNTS)
    assert counted(redis_client) == {}

    assert deadletter.reconcile_counts(redis_client)
    assert counted(redis_client) == truth(redis_client) == {"invalid_payload": 3}
    assert not deadletter.reconcile_counts(redis_client)


def test_a_scrape_reads_no_dead_letter_however_many_there_are(
    redis_client: redis.Redis, settings: Settings
) -> None:
    def xrange_calls_for_one_scrape() -> int:
        redis_client.config_resetstat()
        metrics.render(redis_client)
        stats = redis_client.info("commandstats")
        return int(stats.get("cmdstat_xrange", {}).get("calls", 0))

    empty = xrange_calls_for_one_scrape()
    add_invalid(redis_client, 2000)
    drain(redis_client, settings)
    assert redis_client.xlen(keys.DEADLETTER) == 2000

    # The oldest-entry lookups of the inbox and outbox, and nothing more, with or without letters
    assert xrange_calls_for_one_scrape() == empty <= 2
    assert (
        'rainbridge_deadletter_entries{reason="invalid_payload"} 2000.0'
        in metrics.render(redis_client).decode()
    )
