"""The receiver's two doors: what a client gets back, and what lands in Redis."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from devkit import samples
from devkit.procs import RedisServer
from shared import keys
from shared.settings import Settings
from tests.helpers import INLET, TOKEN

MakeApp = Callable[[Settings], Flask]

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def inbox(client: redis.Redis) -> list[dict[str, str]]:
    return [fields for _, fields in client.xrange(keys.INBOX)]


def test_one_push_is_acknowledged_only_once_it_is_in_redis(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    push = samples.push()
    resp = client.post("/v1/pushes", json=push, headers=AUTH)
    assert resp.status_code == 202
    assert resp.json["accepted"] == 1
    receipt = resp.json["receipt"]
    (entry,) = inbox(redis_client)
    assert json.loads(entry["push"]) == push
    assert entry["receipt"] == receipt


def test_an_array_of_pushes_is_stored_as_one_entry_each(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    pushes = [samples.push() for _ in range(3)]
    resp = client.post("/v1/pushes", json=pushes, headers=AUTH)
    assert resp.status_code == 202
    assert resp.json["accepted"] == 3
    assert [json.loads(e["push"]) for e in inbox(redis_client)] == pushes


def test_basic_auth_with_the_token_as_password_is_accepted(client: FlaskClient) -> None:
    basic = base64.b64encode(f"rainfocus:{TOKEN}".encode()).decode()
    resp = client.post("/v1/pushes", json=samples.push(), headers={"Authorization": f"Basic {basic}"})
    assert resp.status_code == 202


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Token {TOKEN}"},
        {"Authorization": "Basic !!!notbase64"},
    ],
)
def test_without_a_valid_token_the_answer_is_401_and_nothing_is_stored(
    client: FlaskClient, redis_client: redis.Redis, headers: dict[str, str]
) -> None:
    resp = client.post("/v1/pushes", json=samples.push(), headers=headers)
    assert resp.status_code == 401
    assert resp.json["error"] == "unauthorized"
    assert inbox(redis_client) == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b'{"a": NaN}', "invalid_json"),
        (b'"a string"', "not_a_push"),
        (b"42", "not_a_push"),
        (b"[]", "not_a_push"),
        (b'[{"transmissionId": "a"}, 3]', "not_a_push"),
        (b"null", "not_a_push"),
    ],
)
def test_a_body_that_is_not_pushes_is_400_and_nothing_is_stored(
    client: FlaskClient, redis_client: redis.Redis, body: bytes, code: str
) -> None:
    resp = client.post("/v1/pushes", data=body, headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status_code == 400
    assert resp.json["error"] == code
    assert resp.json["detail"]
    assert inbox(redis_client) == []


def test_more_pushes_than_allowed_in_one_array_is_400(client: FlaskClient, settings: Settings) -> None:
    pushes = [{"transmissionId": str(i)} for i in range(settings.receiver_max_pushes + 1)]
    resp = client.post("/v1/pushes", json=pushes, headers=AUTH)
    assert resp.status_code == 400
    assert resp.json["error"] == "not_a_push"


def test_a_body_over_the_limit_is_413(
    settings: Settings, redis_client: redis.Redis, make_app: MakeApp
) -> None:
    app = make_app(dataclasses.replace(settings, receiver_max_bytes=2048))
    big = samples.push(lead={"note": "x" * 4096})
    resp = app.test_client().post("/v1/pushes", json=big, headers=AUTH)
    assert resp.status_code == 413
    assert resp.json["error"] == "too_large"
    assert inbox(redis_client) == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_declared_json_is_415(client: FlaskClient, content_type: str | None) -> None:
    headers = dict(AUTH)
    if content_type:
        headers["Content-Type"] = content_type
    resp = client.post("/v1/pushes", data=json.dumps(samples.push()), headers=headers)
    assert resp.status_code == 415
    assert resp.json["error"] == "unsupported_media_type"


def test_a_signed_request_needs_a_fresh_valid_signature(
    settings: Settings, redis_client: redis.Redis, make_app: MakeApp
) -> None:
    secret = "signing-secret-0123456789"
    app = make_app(dataclasses.replace(settings, receiver_signing_secret=secret))
    http = app.test_client()
    body = json.dumps(samples.push()).encode()

    def post(stamp: int, signature: str | None = None) -> int:
        mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        headers = {**AUTH, "Content-Type": "application/json", "X-Rainbridge-Timestamp": str(stamp)}
        headers["X-Rainbridge-Signature"] = signature or f"sha256={mac}"
        return http.post("/v1/pushes", data=body, headers=headers).status_code

    now = int(time.time())
    assert post(now) == 202
    assert post(now, "sha256=" + "0" * 64) == 401
    assert post(now - 301) == 401  # a replay of an old capture
    assert len(inbox(redis_client)) == 1


def test_collection_door_answers_like_aep_for_one_message(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    push = samples.push()
    resp = client.post(f"/collection/{INLET}", json=push, headers={"Authorization": "Bearer adobe-token"})
    assert resp.status_code == 200
    assert resp.json["inletId"] == INLET
    assert resp.json["xactionId"]
    assert isinstance(resp.json["receivedTimeMs"], int)
    assert [json.loads(e["push"]) for e in inbox(redis_client)] == [push]


def test_collection_batch_door_answers_207_with_one_response_per_message(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    pushes = [samples.push(), samples.push()]
    resp = client.post(f"/collection/batch/{INLET}", json={"messages": [pushes[0], "junk", pushes[1]]})
    assert resp.status_code == 207
    responses = resp.json["responses"]
    assert len(responses) == 3
    assert "xactionId" in responses[0] and "xactionId" in responses[2]
    assert responses[1]["statusCode"] == 400
    assert [json.loads(e["push"]) for e in inbox(redis_client)] == pushes


def test_collection_door_with_a_wrong_inlet_is_404(client: FlaskClient, redis_client: redis.Redis) -> None:
    assert client.post("/collection/not-the-inlet", json=samples.push()).status_code == 404
    assert (
        client.post("/collection/batch/not-the-inlet", json={"messages": [samples.push()]}).status_code == 404
    )
    assert inbox(redis_client) == []


def test_collection_door_checks_the_flow_id_when_one_is_set(
    settings: Settings, redis_client: redis.Redis, make_app: MakeApp
) -> None:
    http = make_app(dataclasses.replace(settings, receiver_flow_id="flow-1")).test_client()
    url = f"/collection/{INLET}"
    assert http.post(url, json=samples.push()).status_code == 400
    assert http.post(url, json=samples.push(), headers={"x-adobe-flow-id": "flow-2"}).json["error"] == (
        "invalid_flow_id"
    )
    assert http.post(url, json=samples.push(), headers={"x-adobe-flow-id": "flow-1"}).status_code == 200
    assert http.post(url + "?x-adobe-flow-id=flow-1", json=samples.push()).status_code == 200
    assert len(inbox(redis_client)) == 2


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").json == {"status": "ready"}


def test_unknown_route_is_a_json_404(client: FlaskClient) -> None:
    resp = client.get("/nope")
    assert resp.status_code == 404
    assert resp.json["error"] == "not_found"


def test_with_redis_stopped_pushes_get_503_with_retry_after_and_never_a_2xx(
    settings: Settings, tmp_path: Path, make_app: MakeApp
) -> None:
    # Given a receiver on its own Redis, which then stops
    server = RedisServer(tmp_path / "redis")
    server.start()
    app = make_app(dataclasses.replace(settings, redis_url=server.url))
    http = app.test_client()
    assert http.post("/v1/pushes", json=samples.push(), headers=AUTH).status_code == 202
    server.shutdown()

    # When pushes arrive, every answer is a 503 the sender will retry
    for _ in range(3):
        resp = http.post("/v1/pushes", json=samples.push(), headers=AUTH)
        assert resp.status_code == 503
        assert resp.json["error"] == "queue_unavailable"
        assert int(resp.headers["Retry-After"]) > 0
    assert http.post(f"/collection/{INLET}", json=samples.push()).status_code == 503
    assert http.get("/readyz").status_code == 503
    assert http.get("/healthz").status_code == 200

    # Then, Redis back, the receiver carries on by itself and nothing acknowledged was lost
    server.start()
    assert http.post("/v1/pushes", json=samples.push(), headers=AUTH).status_code == 202
    assert len(server.client().xrange(keys.INBOX)) == 2
    server.kill()


def test_a_redis_restart_between_two_pushes_costs_the_sender_nothing(
    settings: Settings, tmp_path: Path, make_app: MakeApp
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        # Given a receiver whose connection to Redis has already carried a push
        http = make_app(dataclasses.replace(settings, redis_url=server.url)).test_client()
        assert http.post("/v1/pushes", json=samples.push(), headers=AUTH).status_code == 202

        # When Redis restarts while the receiver is idle: its connection is dead, unknown to it
        server.shutdown()
        server.start()

        # Then the next push is still acknowledged at once, and stored exactly once
        second = samples.push()
        assert http.post("/v1/pushes", json=second, headers=AUTH).status_code == 202
        stored = [json.loads(fields["push"]) for _, fields in server.client().xrange(keys.INBOX)]
        assert len(stored) == 2
        assert stored[1] == second
    finally:
        server.kill()
