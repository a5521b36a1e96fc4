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
    time.sleep(2.5)  # every process folds its counts into Redis once a second

    m = scrape(receiver_url)

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
    # Gauges read from Redis at scrape time
    assert value(m, "rainbridge_queue_depth", stream="inbox") == 0
    assert value(m, "rainbridge_queue_depth", stream="outbox") == 0
    assert value(m, "rainbridge_aep_paused") == 0
    # No secret inlet id in any label
    assert INLET not in requests.get(f"{receiver_url}/metrics", timeout=5).text
