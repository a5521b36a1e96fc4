"""Guarantees the README gives that no other test exercises: limits, ages, tokens, back-off, memory."""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import requests
from flask import Flask

from devkit import samples
from devkit.procs import free_port, wait_for
from ops.cli import main as rainbridge
from shared import deadletter, keys
from shared.settings import Settings
from tests.helpers import SandboxClient, load, to_env
from worker import aep, deliver, pause
from worker.ims import TokenCache


def deliver_all(
    client: redis.Redis, settings: Settings, session: requests.Session, budget_s: float = 1.0
) -> None:
    tokens = TokenCache(client, settings, session)
    deliver.run(client, settings, "d1", aep.AepClient(settings, tokens, session), budget_s)


def batches(sandbox: SandboxClient) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests() if r["path"].startswith("/collection/") and r["messages"]]


def test_no_request_carries_more_than_aep_batch_max_messages(
    redis_client: redis.Redis, settings: Settings, sandbox: SandboxClient, session: requests.Session
) -> None:
    small = dataclasses.replace(settings, aep_batch_max_messages=7)
    load(redis_client, small, [samples.push() for _ in range(50)])

    deliver_all(redis_client, small, session)

    sent = batches(sandbox)
    assert sum(r["messages"] for r in sent) == 50 and len(sandbox.events()) == 50
    assert max(r["messages"] for r in sent) == 7
    assert len(sent) == math.ceil(50 / 7)


def test_no_request_is_larger_than_aep_batch_max_bytes(
    redis_client: redis.Redis, settings: Settings, sandbox: SandboxClient, session: requests.Session
) -> None:
    tight = dataclasses.replace(settings, aep_batch_max_bytes=12_000)
    load(redis_client, tight, [samples.push() for _ in range(60)])

    deliver_all(redis_client, tight, session)

    sent = batches(sandbox)
    assert sum(r["messages"] for r in sent) == 60 and len(sandbox.events()) == 60
    assert max(r["bytes"] for r in sent) <= 12_000
    assert len(sent) > 1 and max(r["bytes"] for r in sent) > 12_000 * 0.7  # full, not one per request


def test_a_message_older_than_delivery_max_age_is_dead_lettered_as_exhausted(
    redis_client: redis.Redis, settings: Settings, sandbox: SandboxClient, session: requests.Session
) -> None:
    # Given AEP failing while three messages wait, and a max age of one second
    brief = dataclasses.replace(settings, delivery_max_age_seconds=1, pending_claim_seconds=1)
    load(redis_client, brief, [samples.push() for _ in range(3)])
    sandbox.faults(fail_next={"count": 1, "status": 500})
    deliver_all(redis_client, brief, session, budget_s=0.1)
    assert not sandbox.events()

    # When AEP is back but the messages are older than the max age
    time.sleep(1.2)
    redis_client.delete(keys.PAUSE)
    wait_for(
        lambda: deliver_all(redis_client, brief, session, budget_s=0.3) or deadletter.read_all(redis_client),
        timeout=15,
        what="the old messages to be given up",
    )

    # Then they are dead letters, not deliveries, and say why
    letters = deadletter.read_all(redis_client)
    assert len(letters) == 3 and not sandbox.events()
    assert {letter.reason for letter in letters} == {deadletter.Reason.DELIVERY_EXHAUSTED}
    assert all("not delivered after" in letter.detail for letter in letters)


def test_the_token_is_renewed_at_90_percent_of_its_life(
    redis_client: redis.Redis, settings: Settings, sandbox: SandboxClient, session: requests.Session
) -> None:
    # Given tokens that live 4 s
    sandbox.faults(token_ttl=4)
    tokens = TokenCache(redis_client, settings, session)
    first = tokens.get()
    cached = tokens.cached()
    assert cached is not None
    assert abs((cached.renew_at - time.time()) - 3.6) < 0.3  # 90% of its life
    # Before then the same token is handed out; from then on a new one is minted
    assert tokens.get() == first and sandbox.stats()["tokens_minted"] == 1
    wait_for(lambda: time.time() > cached.renew_at, timeout=10)
    assert tokens.get() != first and sandbox.stats()["tokens_minted"] == 2


def test_an_ims_outage_at_renewal_time_keeps_delivering_with_the_current_token(
    redis_client: redis.Redis, settings: Settings, sandbox: SandboxClient, session: requests.Session
) -> None:
    # Given a token past 90% of its life (its record says so), and IMS down
    tokens = TokenCache(redis_client, settings, session)
    first = tokens.get()
    cached = tokens.cached()
    assert cached is not None
    redis_client.set(keys.TOKEN, dataclasses.replace(cached, renew_at=time.time() - 1).to_json())
    sandbox.faults(ims_fail_next={"count": 3, "status": 500})

    # When a delivery needs a token, it gets the current one and delivers
    load(redis_client, settings, [samples.push()])
    deliver_all(redis_client, settings, session, budget_s=0.3)
    assert len(sandbox.events()) == 1
    assert tokens.get() == first

    # and once IMS is back, a new one is minted
    sandbox.faults(ims_fail_next=None)
    assert wait_for(lambda: (t := tokens.get()) != first and t, timeout=5)
    assert sandbox.stats()["tokens_minted"] == 2


def test_receiver_tokens_rotate_old_and_new_together(
    settings: Settings, redis_client: redis.Redis, make_app: Callable[[Settings], Flask]
) -> None:
    push = samples.push()
    both = make_app(
        dataclasses.replace(settings, receiver_tokens=("old-token-0123456789", "new-token-0123456789"))
    )
    for token in ("old-token-0123456789", "new-token-0123456789"):
        answer = both.test_client().post(
            "/v1/pushes", json=push, headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 202
    only_new = make_app(dataclasses.replace(settings, receiver_tokens=("new-token-0123456789",)))
    old = only_new.test_client().post(
        "/v1/pushes", json=push, headers={"Authorization": "Bearer old-token-0123456789"}
    )
    assert old.status_code == 401 and old.get_json()["error"] == "unauthorized"


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"X-Rainbridge-Signature": "sha256=" + "0" * 64}, "no timestamp"),
        (
            {"X-Rainbridge-Timestamp": "now", "X-Rainbridge-Signature": "sha256=" + "0" * 64},
            "malformed timestamp",
        ),
        ({"X-Rainbridge-Timestamp": str(int(time.time()) + 3600)}, "from the future"),
        (
            {"X-Rainbridge-Timestamp": str(int(time.time())), "X-Rainbridge-Signature": "md5=abc"},
            "other scheme",
        ),
        ({"X-Rainbridge-Timestamp": str(int(time.time()))}, "no signature"),
    ],
)
def test_a_signed_door_refuses_missing_future_and_malformed_signatures(
    settings: Settings,
    redis_client: redis.Redis,
    make_app: Callable[[Settings], Flask],
    headers: dict[str, str],
    why: str,
) -> None:
    app = make_app(dataclasses.replace(settings, receiver_signing_secret="signing-secret-0123456789"))
    token = settings.receiver_tokens[0]
    answer = app.test_client().post(
        "/v1/pushes",
        data=json.dumps(samples.push()),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json", **headers},
    )
    assert answer.status_code == 401, why
    assert answer.get_json()["error"] in ("unauthorized", "bad_signature"), answer.get_json()
    assert redis_client.xlen(keys.INBOX) == 0


def test_receiver_max_queue_bytes_0_means_90_percent_of_maxmemory(
    settings: Settings, redis_client: redis.Redis, make_app: Callable[[Settings], Flask]
) -> None:
    assert settings.receiver_max_queue_bytes == 0
    token = settings.receiver_tokens[0]
    used = int(redis_client.info("memory")["used_memory"])
    # Given a maxmemory whose 90% mark is already passed (but not maxmemory itself)
    redis_client.config_set("maxmemory", str(int(used / 0.95)))
    try:
        app = make_app(settings)
        answer = app.test_client().post(
            "/v1/pushes", json=samples.push(), headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 503 and "Retry-After" in answer.headers
        # and with room below the mark, the same push is taken
        redis_client.config_set("maxmemory", str(used * 4))
        wait_for(
            lambda: (
                make_app(settings)
                .test_client()
                .post("/v1/pushes", json=samples.push(), headers={"Authorization": f"Bearer {token}"})
                .status_code
                == 202
            ),
            timeout=10,
        )
    finally:
        redis_client.config_set("maxmemory", "0")


def test_check_flags_a_redis_that_may_evict(
    settings: Settings,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in to_env(settings).items():
        monkeypatch.setenv(name, value)
    redis_client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        assert rainbridge(["check"]) == 1
    finally:
        redis_client.config_set("maxmemory-policy", "noeviction")
    out = capsys.readouterr().out
    assert "FAIL  Redis has maxmemory-policy=allkeys-lru" in out


def test_the_back_off_ceiling_doubles_with_each_failure_up_to_the_cap(redis_client: redis.Redis) -> None:
    # Each back-off is a random wait below a ceiling: base x 2^(failures - 1), at most the cap.
    cap_ms = 16_000
    highest: list[int] = []
    for failures in range(1, 8):
        waits = []
        for _ in range(200):
            redis_client.set(pause.FAILURES, failures - 1)
            redis_client.delete(keys.PAUSE)
            started = pause.now_ms()
            waits.append(pause.back_off(redis_client, cap_ms, "test") - started)
        highest.append(max(waits))
    ceilings = [min(cap_ms, pause.BACKOFF_BASE_MS * 2 ** (n - 1)) for n in range(1, 8)]
    for top, ceiling in zip(highest, ceilings, strict=True):
        # 200 draws below the ceiling: the highest is within 5% of it (odds against: 0.95^200)
        assert ceiling * 0.95 <= top <= ceiling + 50
    assert ceilings == [500, 1000, 2000, 4000, 8000, 16000, 16000]


def test_a_host_that_cannot_reach_aep_backs_off_alone(
    redis_client: redis.Redis, settings: Settings, sandbox: SandboxClient, session: requests.Session
) -> None:
    # Given AEP unreachable from here (nothing listens where this host's requests go)
    load(redis_client, settings, [samples.push() for _ in range(3)])
    unreachable = dataclasses.replace(
        settings, aep_streaming_url=f"http://127.0.0.1:{free_port()}/collection/sandbox-inlet"
    )

    deliver_all(redis_client, unreachable, session, budget_s=0.3)

    # Then this host backs off, and the fleet does not
    assert redis_client.get(keys.PAUSE) is None
    host = socket.gethostname()
    assert redis_client.hget(pause.HOST_PAUSES, host) is not None
    assert int(redis_client.hget(pause.HOST_FAILURES, host) or 0) >= 1
    assert pause.paused_until(redis_client) == 0
    assert pause.paused_until(redis_client, "another-host") == 0
    # and while it backs off, `rainbridge status` names it
    from shared import status  # noqa: PLC0415

    redis_client.hset(pause.HOST_FAILURES, host, 10)
    until = pause.host_back_off(redis_client, host, 60_000, "test")
    if until > pause.now_ms():  # (a full-jitter draw of 0 ms would end it at once)
        assert status.collect(redis_client)["aep_hosts_backing_off"] == {host: until}
        assert pause.paused_until(redis_client, host) == until
    # while AEP's own 500s still back off every host
    redis_client.delete(pause.HOST_PAUSES)
    sandbox.faults(fail_next={"count": 1, "status": 500})
    deliver_all(redis_client, settings, session, budget_s=0.05)
    assert redis_client.get(keys.PAUSE) is not None
