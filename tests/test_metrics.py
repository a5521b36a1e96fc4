"""Metrics after real traffic through several processes: the numbers add up."""

from __future__ import annotations

import time

import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from devkit import samples
from devkit.procs import wait_for
from tests.helpers import INLET, TOKEN, Pipeline, SandboxClient

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_after_real_traffic_add_up(
    receiver_url: str, pipeline: Pipeline, sandbox: SandboxClient, redis_client: redis.Redis
) -> None:
    # Given 40 good pushes (10 of them twice), 3 invalid ones, one batch via the AEP door, one refusal
    good = [samples.push() for _ in range(40)]
    with requests.Session() as http:
        for push in good + good[:10] + [samples.push(timestamp="soon") for _ in range(3)]:
            assert (
                http.post(f"{receiver_url}/v1/pushes", json=push, headers=AUTH, timeout=5).status_code == 202
            )
        door = [samples.push(), samples.push()]
        resp = http.post(f"{receiver_url}/collection/batch/{INLET}", json={"messages": door}, timeout=5)
        assert resp.status_code == 207
        assert http.post(f"{receiver_url}/v1/pushes", json=samples.push(), timeout=5).status_code == 401
    sandbox.wait_for_events(42)
    wait_for(lambda: redis_client.xlen("rainbridge:outbox") == 0, what="the outbox to drain")
    # Every process folds its counts into Redis once a second: wait until the last ones are in.
    m = wait_for(
        lambda: (
            (m := scrape(receiver_url))
            and value(m, "rainbridge_pushes_total", outcome="sent") >= 42
            and value(m, "rainbridge_receiver_requests_total", route="/v1/pushes", status="401") >= 1
            and value(m, "rainbridge_delivery_latency_seconds_count") >= 42
            and m
        ),
        timeout=20,
        what="every process's counts in /metrics",
    )

    # The receiver counted what it answered (over two gunicorn processes)
    assert value(m, "rainbridge_receiver_requests_total", route="/v1/pushes", status="202") == 53
    assert value(m, "rainbridge_receiver_requests_total", route="/v1/pushes", status="401") == 1
    assert (
        value(m, "rainbridge_receiver_requests_total", route="/collection/batch/<inlet_id>", status="207")
        == 1
    )
    stored = value(m, "rainbridge_receiver_pushes_total", route="/v1/pushes") + value(
        m, "rainbridge_receiver_pushes_total", route="/collection/batch/<inlet_id>"
    )
    assert stored == 55
    assert value(m, "rainbridge_receiver_ack_seconds_count", route="/v1/pushes") == 53
    # The workers counted each push once, by outcome (over two pool processes)
    validated = value(m, "rainbridge_pushes_total", outcome="validated")
    invalid = value(m, "rainbridge_pushes_total", outcome="invalid")
    duplicate = value(m, "rainbridge_pushes_total", outcome="duplicate")
    sent = value(m, "rainbridge_pushes_total", outcome="sent")
    assert (validated, invalid, duplicate, sent) == (52, 3, 10, 42)
    assert validated + invalid == stored
    assert value(m, "rainbridge_deadletters_total", reason="invalid_payload") == 3
    assert value(m, "rainbridge_deadletter_entries", reason="invalid_payload") == 3
    # Batches, their sizes and AEP's answers agree with what the sandbox saw
    batches = value(m, "rainbridge_aep_batches_total")
    collection = [r for r in sandbox.requests() if r["path"].startswith("/collection/")]
    assert batches == len(collection) == value(m, "rainbridge_aep_responses_total", status="207")
    assert value(m, "rainbridge_aep_batch_messages_sum") == 42
    assert value(m, "rainbridge_aep_request_seconds_count") == batches
    assert value(m, "rainbridge_aep_tokens_minted_total") == sandbox.stats()["tokens_minted"] == 1
    # Each delivered event's time from receipt to AEP, and in each stage
    assert value(m, "rainbridge_delivery_latency_seconds_count") == 42
    latency_sum = value(m, "rainbridge_delivery_latency_seconds_sum")
    assert 0 < latency_sum < 42 * 30
    assert value(m, "rainbridge_stage_seconds_count", stage="inbox_wait") == stored
    assert value(m, "rainbridge_stage_seconds_count", stage="ingest") == stored
    assert value(m, "rainbridge_stage_seconds_count", stage="outbox_wait") == 42
    assert value(m, "rainbridge_stage_seconds_count", stage="delivery") == 42
    stages = sum(
        value(m, "rainbridge_stage_seconds_sum", stage=stage) for stage in ("outbox_wait", "delivery")
    )
    assert stages <= latency_sum  # the last two stages are part of the whole
    assert value(m, "rainbridge_aep_token_expires_in_seconds") > 0
    assert value(m, "rainbridge_redis_used_memory_bytes") > 0
    # Gauges read from Redis at scrape time
    assert value(m, "rainbridge_queue_depth", stream="inbox") == 0
    assert value(m, "rainbridge_queue_depth", stream="outbox") == 0
    assert value(m, "rainbridge_aep_paused") == 0
    # No secret inlet id in any label
    assert INLET not in requests.get(f"{receiver_url}/metrics", timeout=5).text


def test_status_shows_the_latency_percentiles_of_the_last_minutes(redis_client: redis.Redis) -> None:
    from shared import metrics, status  # noqa: PLC0415

    # Given 90 events delivered in 0.1-0.25 s, 9 in 1-2 s and one after 5-10 s, this minute
    recorder = metrics.Recorder()
    recorder.bind(redis_client)
    recorder.observe_many(metrics.DELIVERY_LATENCY, [0.2] * 90 + [1.5] * 9 + [7.0])
    recorder.flush()

    recent = status.latency(redis_client, int(time.time() * 1000))

    # Then the percentiles are read from the per-minute counts, as histogram_quantile would
    assert recent["events"] == 100
    assert 0.1 < recent["p50_seconds"] <= 0.25
    assert 1.0 < recent["p99_seconds"] <= 2.0
    # and the counts expire: only the last 15 minutes are kept
    minute_keys = redis_client.keys("rainbridge:metrics:minute:*")
    assert minute_keys and all(0 < redis_client.ttl(key) <= 15 * 60 for key in minute_keys)
    # and nothing in the last 5 minutes says so
    assert status.latency(redis_client, int(time.time() * 1000) + 10 * 60_000)["events"] == 0


def test_a_percentile_interpolates_within_its_bucket_from_the_bucket_below(redis_client: redis.Redis) -> None:
    from shared import metrics, status  # noqa: PLC0415

    # Given every event between 0.5 s and 1 s (the buckets below are empty)
    recorder = metrics.Recorder()
    recorder.bind(redis_client)
    recorder.observe_many(metrics.DELIVERY_LATENCY, [0.7] * 10)
    recorder.flush()

    recent = status.latency(redis_client, int(time.time() * 1000))

    # Then the median is the middle of that bucket, as histogram_quantile would say
    assert recent["p50_seconds"] == 0.75
    assert metrics.DELIVERY_LATENCY.buckets == status.LATENCY_BUCKETS
