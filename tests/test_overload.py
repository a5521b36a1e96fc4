"""Overload: past a high-water mark the receiver answers 503 with Retry-After, and recovers by itself."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import redis
import requests
from flask import Flask

from devkit import samples
from devkit.procs import free_port, gunicorn, wait_for
from shared.settings import Settings
from tests.helpers import TOKEN, Pipeline, SandboxClient, to_env

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_past_the_inbox_depth_mark_pushes_get_503_and_everything_acknowledged_is_delivered(
    settings: Settings, redis_client: redis.Redis, sandbox: SandboxClient, tmp_path: Path
) -> None:
    limited = dataclasses.replace(settings, receiver_max_inbox_depth=40)
    port = free_port()
    receiver = gunicorn(to_env(limited), port, tmp_path / "gunicorn.log")
    url = f"http://127.0.0.1:{port}/v1/pushes"
    acked: set[str] = set()
    try:
        wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok, what="gunicorn")
        # Given no workers running, pushes pile up until the receiver refuses them
        refused = []
        with requests.Session() as http:
            for _ in range(400):
                push = samples.push()
                resp = http.post(url, json=push, headers=AUTH, timeout=5)
                if resp.status_code == 202:
                    acked.add(push["transmissionId"])
                else:
                    refused.append(resp)
                    if len(refused) >= 5:
                        break
                time.sleep(0.01)
        assert len(refused) >= 5, "the receiver never pushed back"
        for resp in refused:
            assert resp.status_code == 503
            assert resp.json()["error"] == "queue_unavailable"
            assert int(resp.headers["Retry-After"]) > 0
        assert len(acked) >= 40

        # When workers start, everything acknowledged is delivered, and pushes are accepted again
        fleet = Pipeline(limited, tmp_path)
        try:
            fleet.start_worker()
            events = sandbox.wait_for_events(len(acked), timeout=60)
            assert {e["transmissionId"] for e in events} == acked

            def accepted_again() -> bool:
                return requests.post(url, json=samples.push(), headers=AUTH, timeout=5).status_code == 202

            wait_for(accepted_again, timeout=10, interval=0.3, what="the receiver to accept again")
        finally:
            fleet.stop()
    finally:
        receiver.stop()


def test_past_the_memory_mark_pushes_get_503(
    settings: Settings, redis_client: redis.Redis, make_app: Callable[[Settings], Flask]
) -> None:
    used = int(redis_client.info("memory")["used_memory"])
    http = make_app(dataclasses.replace(settings, receiver_max_queue_bytes=used // 2)).test_client()
    resp = http.post("/v1/pushes", json=samples.push(), headers=AUTH)
    assert resp.status_code == 503
    assert "full" in resp.json["detail"]


def test_a_redis_out_of_memory_error_is_a_503_never_a_500(
    settings: Settings, redis_client: redis.Redis, make_app: Callable[[Settings], Flask]
) -> None:
    # Marks out of the way, so the write itself meets Redis's refusal
    unguarded = dataclasses.replace(settings, receiver_max_inbox_depth=0, receiver_max_queue_bytes=2**40)
    http = make_app(unguarded).test_client()
    used = int(redis_client.info("memory")["used_memory"])
    redis_client.config_set("maxmemory", used)  # noeviction: every write is refused with OOM
    try:
        resp = http.post("/v1/pushes", json=[samples.push() for _ in range(50)], headers=AUTH)
        assert resp.status_code == 503
        assert resp.json["error"] == "queue_unavailable"
        assert "full" not in resp.json["detail"]
        assert redis_client.xlen("rainbridge:inbox") == 0
    finally:
        redis_client.config_set("maxmemory", 0)
