"""End to end with real processes: gunicorn receiver → Redis → Celery workers → AEP sandbox."""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
import requests

from devkit import samples
from devkit.procs import wait_for
from shared import deadletter, keys
from shared.settings import Settings
from tests.helpers import INLET, SANDBOX, TOKEN, Pipeline, SandboxClient

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def post_all(url: str, bodies: list[Any], path: str = "/v1/pushes", workers: int = 8) -> list[int]:
    with requests.Session() as http, ThreadPoolExecutor(workers) as pool:
        return list(
            pool.map(
                lambda body: http.post(url + path, json=body, headers=AUTH, timeout=10).status_code, bodies
            )
        )


def test_pushes_posted_over_http_arrive_at_aep_once_each_batched_with_the_right_headers(
    receiver_url: str, pipeline: Pipeline, sandbox: SandboxClient, settings: Settings
) -> None:
    # Given 200 distinct pushes
    pushes = [samples.push() for _ in range(200)]

    # When they are posted one by one, concurrently
    started = time.monotonic()
    assert post_all(receiver_url, pushes) == [202] * 200

    # Then each arrives at AEP exactly once, as the XDM event of its push
    events = sandbox.wait_for_events(200)
    elapsed = time.monotonic() - started
    time.sleep(1.5)  # anything sent twice would show up now
    events = sandbox.events()
    assert sorted(e["transmissionId"] for e in events) == sorted(p["transmissionId"] for p in pushes)
    by_id = {e["transmissionId"]: e for e in events}
    for push in pushes:
        entity = by_id[push["transmissionId"]]["message"]["body"]["xdmEntity"]
        assert entity["_id"] == hashlib.sha256(push["transmissionId"].encode()).hexdigest()
        assert entity["identityMap"]["Email"][0]["id"] == push["attendee"]["email"].lower()
        assert entity["_acme"]["session"]["length"] == 90

    # And they travelled in batches, with the envelope headers and one bearer token
    collection = [r for r in sandbox.requests() if "/collection/batch/" in r["path"]]
    assert all(r["status"] == 207 for r in collection)
    assert len(collection) < 200 / 5, f"{len(collection)} requests for 200 pushes"
    assert sandbox.stats()["tokens_minted"] == 1
    for request in collection:
        headers = request["headers"]
        assert headers["content-type"] == "application/json"
        assert headers["authorization"].startswith("Bearer ")
        assert headers["x-gw-ims-org-id"] == SANDBOX.org_id
        assert headers["x-api-key"] == SANDBOX.client_id
        assert headers["x-sandbox-name"] == "prod"
    print(f"\n200 pushes posted and delivered in {elapsed:.2f}s ({200 / elapsed:.0f} events/s end to end)")


def test_the_same_transmission_id_posted_repeatedly_and_concurrently_reaches_aep_once(
    receiver_url: str, pipeline: Pipeline, sandbox: SandboxClient, redis_client: redis.Redis
) -> None:
    push = samples.push()
    others = [samples.push() for _ in range(3)]

    assert post_all(receiver_url, [push] * 10 + others, workers=10) == [202] * 13
    assert post_all(receiver_url, [[push, push]]) == [202]

    sandbox.wait_for_events(4)
    wait_for(lambda: redis_client.xlen(keys.INBOX) == 0, what="the inbox to drain")
    time.sleep(1.5)
    ids = [e["transmissionId"] for e in sandbox.events()]
    assert ids.count(push["transmissionId"]) == 1
    assert len(ids) == 4


def test_an_invalid_push_is_dead_lettered_and_its_neighbours_are_delivered(
    receiver_url: str, pipeline: Pipeline, sandbox: SandboxClient, redis_client: redis.Redis
) -> None:
    good = [samples.push() for _ in range(4)]
    bad = samples.push(timestamp="yesterday")

    assert post_all(receiver_url, [[good[0], good[1], bad, good[2]], good[3]]) == [202, 202]

    events = sandbox.wait_for_events(4)
    assert {e["transmissionId"] for e in events} == {p["transmissionId"] for p in good}
    (letter,) = wait_for(lambda: deadletter.read_all(redis_client), what="the dead letter")
    assert letter.reason == deadletter.Reason.INVALID_PAYLOAD
    assert letter.transmission_id == bad["transmissionId"]
    assert "timestamp" in letter.parsed_detail
    assert json.loads(letter.push) == bad


def test_the_aep_compatible_door_feeds_the_same_pipeline(
    receiver_url: str, pipeline: Pipeline, sandbox: SandboxClient
) -> None:
    single, batch = samples.push(), [samples.push(), samples.push()]
    with requests.Session() as http:
        one = http.post(f"{receiver_url}/collection/{INLET}", json=single, timeout=10)
        many = http.post(f"{receiver_url}/collection/batch/{INLET}", json={"messages": batch}, timeout=10)
    assert one.status_code == 200 and one.json()["xactionId"]
    assert many.status_code == 207 and len(many.json()["responses"]) == 2

    events = sandbox.wait_for_events(3)
    assert {e["transmissionId"] for e in events} == {p["transmissionId"] for p in [single, *batch]}
