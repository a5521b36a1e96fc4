"""Ingest hand-off with a real Redis: dedupe by transmissionId, dead letters, and no double hand-off."""

from __future__ import annotations

import dataclasses
import json
import time

import redis

from devkit import samples
from shared import deadletter, keys
from shared.settings import Settings
from worker import dedupe, ingest, streams


def add_push(client: redis.Redis, push: dict[str, object] | str, **extra: str) -> str:
    body = push if isinstance(push, str) else json.dumps(push)
    entry_id: str = client.xadd(keys.INBOX, {"push": body, "receipt": "r1", **extra})
    return entry_id


def outbox(client: redis.Redis) -> list[dict[str, str]]:
    return [fields for _, fields in client.xrange(keys.OUTBOX)]


def test_valid_pushes_move_to_the_outbox_as_aep_messages(
    redis_client: redis.Redis, settings: Settings
) -> None:
    pushes = [samples.push() for _ in range(5)]
    for push in pushes:
        add_push(redis_client, push)

    summary = ingest.drain(redis_client, settings, "c1", budget_s=0.2)

    assert (summary.read, summary.sent, summary.repeats, summary.dead) == (5, 5, 0, 0)
    sent = outbox(redis_client)
    assert [m["transmissionId"] for m in sent] == [p["transmissionId"] for p in pushes]
    message = json.loads(sent[0]["message"])
    assert message["header"]["datasetId"] == settings.aep_dataset_id
    assert message["body"]["xdmEntity"]["_acme"]["transmissionId"] == pushes[0]["transmissionId"]
    assert json.loads(sent[0]["push"]) == pushes[0]
    # Handled inbox entries are gone: the inbox holds only what is still to do.
    assert redis_client.xlen(keys.INBOX) == 0


def test_a_repeated_transmission_id_is_handed_off_once(redis_client: redis.Redis, settings: Settings) -> None:
    push = samples.push()
    add_push(redis_client, push)
    add_push(redis_client, push)
    ingest.drain(redis_client, settings, "c1", budget_s=0.2)
    add_push(redis_client, dict(push, eventType="SessionAttended"))  # same id later, other content

    summary = ingest.drain(redis_client, settings, "c1", budget_s=0.2)

    assert summary.repeats == 1
    assert len(outbox(redis_client)) == 1
    # The id is remembered until the TTL, in its dedupe set, which lives an hour longer at most
    event_id = json.loads(outbox(redis_client)[0]["message"])["body"]["xdmEntity"]["_id"]
    bucket, member = keys.dedupe_slot(event_id, settings.dedupe_buckets)
    forgotten_at = redis_client.zscore(bucket, member)
    now = redis_client.time()[0]
    assert forgotten_at is not None and abs(forgotten_at - (now + settings.dedupe_ttl_seconds)) <= 2
    assert settings.dedupe_ttl_seconds < redis_client.ttl(bucket) <= settings.dedupe_ttl_seconds + 3600
    assert dedupe.remembered(redis_client, settings, event_id)


def test_a_replayed_push_bypasses_the_dedupe_drop_once(redis_client: redis.Redis, settings: Settings) -> None:
    push = samples.push()
    add_push(redis_client, push)
    ingest.drain(redis_client, settings, "c1", budget_s=0.2)
    add_push(redis_client, push, replay="1", receivedMs="1700000000000")
    add_push(redis_client, push)

    ingest.drain(redis_client, settings, "c1", budget_s=0.2)

    sent = outbox(redis_client)
    assert len(sent) == 2
    assert sent[1]["receivedMs"] == "1700000000000"


def test_invalid_pushes_are_dead_lettered_with_the_validation_messages(
    redis_client: redis.Redis, settings: Settings
) -> None:
    bad = samples.push()
    del bad["attendee"]["email"]
    add_push(redis_client, bad)
    add_push(redis_client, "{not json")
    add_push(redis_client, samples.push(timestamp="2023-04-01T00:41:57"))  # no timezone

    summary = ingest.drain(redis_client, settings, "c1", budget_s=0.2)

    assert summary.dead == 3
    letters = deadletter.read_all(redis_client)
    assert [d.reason for d in letters] == [deadletter.Reason.INVALID_PAYLOAD] * 3
    assert "attendee.email" in letters[0].parsed_detail
    assert letters[0].transmission_id == bad["transmissionId"]
    assert json.loads(letters[0].push) == bad
    assert letters[1].push == "{not json"
    assert "timestamp" in letters[2].parsed_detail
    assert outbox(redis_client) == []
    assert redis_client.xlen(keys.INBOX) == 0


def test_an_entry_already_handed_off_by_another_worker_is_not_handed_off_again(
    redis_client: redis.Redis, settings: Settings
) -> None:
    # Given two workers that both read the same entry (one was presumed dead and its entry reclaimed)
    streams.ensure_group(redis_client, keys.INBOX, keys.INBOX_GROUP)
    add_push(redis_client, samples.push())
    bad = samples.push()
    del bad["eventType"]
    add_push(redis_client, bad)
    first = streams.read_new(redis_client, keys.INBOX, keys.INBOX_GROUP, "slow", count=10, block_ms=0)
    second = streams.claim_stale(redis_client, keys.INBOX, keys.INBOX_GROUP, "live", idle_ms=0, count=10)
    assert [e.id for e in first] == [e.id for e in second]
    handoff = dedupe.Handoff(redis_client, settings)

    # When both hand it off
    live = handoff([ingest.prepare(e, settings) for e in second])
    slow = handoff([ingest.prepare(e, settings) for e in first])

    # Then only the first counts: one message in the outbox, one dead letter
    assert (live.sent, live.dead) == (1, 1)
    assert (slow.sent, slow.repeats, slow.dead) == (0, 0, 0)
    assert len(outbox(redis_client)) == 1
    assert len(deadletter.read_all(redis_client)) == 1


def test_entries_of_a_dead_consumer_are_taken_over_after_the_claim_time(
    redis_client: redis.Redis, settings: Settings
) -> None:
    streams.ensure_group(redis_client, keys.INBOX, keys.INBOX_GROUP)
    add_push(redis_client, samples.push())
    streams.read_new(redis_client, keys.INBOX, keys.INBOX_GROUP, "dead-worker", count=10, block_ms=0)

    # Within the claim time nobody else takes it
    assert ingest.drain(redis_client, settings, "live", budget_s=0.1).read == 0

    quick = dataclasses.replace(settings, pending_claim_seconds=1)
    time.sleep(1.1)
    assert ingest.drain(redis_client, quick, "live", budget_s=0.1).sent == 1


def test_consumers_of_gone_processes_are_forgotten_once_they_hold_nothing(redis_client: redis.Redis) -> None:
    streams.ensure_group(redis_client, keys.INBOX, keys.INBOX_GROUP)
    add_push(redis_client, samples.push())
    streams.read_new(redis_client, keys.INBOX, keys.INBOX_GROUP, "holds-one", count=1, block_ms=0)
    redis_client.xgroup_createconsumer(keys.INBOX, keys.INBOX_GROUP, "holds-none")

    assert streams.forget_idle_consumers(redis_client, keys.INBOX, keys.INBOX_GROUP, idle_ms=0) == 1
    names = [c["name"] for c in redis_client.xinfo_consumers(keys.INBOX, keys.INBOX_GROUP)]
    assert names == ["holds-one"]
    assert streams.forget_idle_consumers(redis_client, keys.INBOX, keys.INBOX_GROUP, idle_ms=60_000) == 0


def test_entries_the_receiver_would_refuse_are_dead_lettered_not_looped_on(
    redis_client: redis.Redis, settings: Settings
) -> None:
    # Written by something other than the receiver: none of these may stop the drain.
    add_push(redis_client, json.dumps(samples.push(transmissionId="\ud800abc"), ensure_ascii=True))
    add_push(redis_client, "[" * 5000 + "]" * 5000)
    add_push(redis_client, samples.push(), receivedMs="yesterday")

    summary = ingest.drain(redis_client, settings, "c1", budget_s=0.2)

    assert (summary.read, summary.sent, summary.dead) == (3, 1, 2)
    assert [d.reason for d in deadletter.read_all(redis_client)] == ["invalid_payload"] * 2
    assert redis_client.xlen(keys.INBOX) == 0
