"""Delivery faults with real Celery workers: fleet pause, crashes, outages, token expiry."""

from __future__ import annotations

import dataclasses
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from devkit import samples
from devkit.ledger import Ledger
from devkit.procs import free_port, gunicorn, wait_for
from devkit.sandbox import SandboxServer
from shared import keys
from shared.settings import Settings
from tests.helpers import TOKEN, Pipeline, SandboxClient, to_env

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def ledger(receiver_url: str) -> Any:
    book = Ledger(receiver_url, TOKEN)
    yield book
    book.http.close()


def collection(sandbox: SandboxClient) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests() if r["path"].startswith("/collection/")]


def test_a_fleet_of_workers_sends_nothing_to_aep_while_a_retry_after_runs(
    pipeline: Pipeline, ledger: Ledger, sandbox: SandboxClient, redis_client: redis.Redis
) -> None:
    # Given three worker processes' worth of fleet (two workers, two processes each) delivering
    pipeline.start_worker("w2")
    ledger.post([samples.push() for _ in range(50)])
    sandbox.wait_for_events(50)

    # When AEP answers one request with 429 and Retry-After: 5 while pushes keep coming
    sandbox.faults(fail_next={"count": 1, "status": 429, "retry_after": "5"})
    for _ in range(6):
        ledger.post([samples.push() for _ in range(20)])
        time.sleep(0.5)

    # Then nothing reaches AEP for those 5 seconds (bar a request already on its way), and after it all does
    verdict = ledger.wait_until_settled(sandbox, redis_client, timeout=40)
    assert verdict["missing"] == [] and verdict["dead"] == {}
    requests_seen = collection(sandbox)
    (refused,) = [r for r in requests_seen if r["status"] == 429]
    during = [r for r in requests_seen if refused["timeMs"] + 300 < r["timeMs"] < refused["timeMs"] + 5000]
    assert during == []


def test_a_batch_held_by_a_killed_worker_is_delivered_by_another(
    settings: Settings, redis_client: redis.Redis, sandbox: SandboxClient, ledger: Ledger, tmp_path: Path
) -> None:
    quick = dataclasses.replace(settings, pending_claim_seconds=3)
    fleet = Pipeline(quick, tmp_path)
    try:
        doomed = fleet.start_worker("doomed")
        # Given a worker stuck in a slow AEP request with a batch in hand
        sandbox.faults(slow_ms=20_000)
        ledger.post([samples.push() for _ in range(30)])
        wait_for(
            lambda: redis_client.xpending(keys.OUTBOX, keys.OUTBOX_GROUP)["pending"] == 30,
            what="the worker to hold the batch",
        )
        # (AEP had the doomed worker's request: it records a request before answering it slowly)
        wait_for(lambda: len(sandbox.events()) == 30, what="the doomed worker's request at AEP")
        # When it is killed outright (its whole process group), and AEP is fast again
        killed_at = time.monotonic()
        killed_ms = time.time() * 1000
        doomed.signal_group(signal.SIGKILL)
        sandbox.faults(slow_ms=0)
        fleet.start_worker("survivor")

        # Then another worker delivers the batch: each of the 30 arrives again, after the kill,
        # under the same _id (the doomed request was never answered, so it counts for nothing)
        verdict = wait_for(
            lambda: (v := ledger.verdict(sandbox, redis_client))["resent"] >= 30 and v,
            timeout=60,
            what="the survivor to send the batch again",
        )
        recovery = time.monotonic() - killed_at
        assert verdict["missing"] == [] and verdict["conflicting_ids"] == [] and verdict["dead"] == {}
        after_kill = {e["transmissionId"] for e in sandbox.events() if e["receivedTimeMs"] >= killed_ms}
        assert after_kill == set(ledger.acked)
        print(f"\nbatch of a SIGKILLed worker delivered by another {recovery:.1f}s after the kill")
    finally:
        fleet.stop()


def test_an_aep_outage_longer_than_the_back_off_cap_ends_with_everything_delivered(
    settings: Settings,
    redis_client: redis.Redis,
    sandbox: SandboxClient,
    sandbox_server: SandboxServer,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    capped = dataclasses.replace(settings, delivery_backoff_cap_seconds=2)
    fleet = Pipeline(capped, tmp_path)
    try:
        fleet.start_worker()
        # Given AEP gone (connection refused) for longer than the back-off cap, while pushes arrive
        sandbox_server.stop()
        ledger.post([samples.push() for _ in range(40)])
        time.sleep(6)
        assert redis_client.xlen(keys.OUTBOX) == 40

        # When it comes back
        sandbox_server.start()
        back = time.monotonic()

        # Then everything is delivered, soon
        verdict = ledger.wait_until_settled(sandbox, redis_client, timeout=30)
        drained = time.monotonic() - back
        assert verdict["delivered"] == 40 and verdict["dead"] == {}
        print(f"\n40 pushes held through a 6 s outage delivered {drained:.1f}s after AEP came back (cap 2 s)")
    finally:
        if not sandbox_server.running:
            sandbox_server.start()
        fleet.stop()


def test_a_token_expiring_mid_run_is_replaced_once_for_the_whole_fleet(
    pipeline: Pipeline, ledger: Ledger, sandbox: SandboxClient, redis_client: redis.Redis
) -> None:
    pipeline.start_worker("w2")
    ledger.post([samples.push() for _ in range(40)])
    sandbox.wait_for_events(40)
    assert sandbox.stats()["tokens_minted"] == 1

    for _ in range(2):
        sandbox.faults(expire_tokens=True)
        ledger.post([samples.push() for _ in range(100)], workers=16)
        ledger.wait_until_settled(sandbox, redis_client, timeout=30)

    assert sandbox.stats()["tokens_minted"] == 3  # one per expiry, not one per worker or request


def test_mixed_faults_lose_nothing_and_never_send_one_push_under_two_ids(
    settings: Settings, redis_client: redis.Redis, sandbox: SandboxClient, ledger: Ledger, tmp_path: Path
) -> None:
    quick = dataclasses.replace(settings, pending_claim_seconds=2, delivery_backoff_cap_seconds=2)
    fleet = Pipeline(quick, tmp_path)
    try:
        fleet.start_worker("w1")
        fleet.start_worker("w2")
        pushes = [samples.push() for _ in range(300)]
        rejected = {p["transmissionId"] for p in pushes[::37]}
        poison = pushes[100]["transmissionId"]
        invalid = [samples.push(timestamp="not a time") for _ in range(3)]
        sandbox.faults(reject_ids=sorted(rejected), reject_status=400)

        ledger.post(pushes[:100] + invalid)
        sandbox.faults(fail_next={"count": 2, "status": 503, "retry_after": "1"})
        ledger.post(pushes[100:200])
        sandbox.faults(fail_next={"count": 3, "status": 500}, expire_tokens=True)
        sandbox.faults(reject_ids=[*sorted(rejected), poison], reject_mode="request")
        ledger.post(pushes[200:])

        verdict = ledger.wait_until_settled(sandbox, redis_client, timeout=90)
        assert verdict["missing"] == []
        assert verdict["conflicting_ids"] == []
        assert set(verdict["dead"]) == rejected | {poison} | {p["transmissionId"] for p in invalid}
        assert verdict["acked"] == 303
        assert verdict["delivered"] + len(verdict["dead"]) == 303
    finally:
        fleet.stop()


def test_the_receiver_under_gunicorn_keeps_answering_while_aep_is_down(
    settings: Settings, redis_client: redis.Redis, sandbox: SandboxClient, tmp_path: Path
) -> None:
    # AEP trouble never reaches the request path: the receiver still answers 202 at once.
    sandbox.faults(down_for_ms=5000)
    port = free_port()
    proc = gunicorn(to_env(settings), port, tmp_path / "g.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(f"{url}/healthz", timeout=1).ok, what="gunicorn")
        started = time.monotonic()
        resp = requests.post(f"{url}/v1/pushes", json=samples.push(), headers=AUTH, timeout=5)
        assert resp.status_code == 202
        # at once: well inside the 5 s AEP is down, so the request never waited on it
        assert time.monotonic() - started < 4
    finally:
        proc.stop()
