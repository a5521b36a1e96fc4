"""``rainbridge status`` and ``rainbridge check`` against a real Redis and the AEP sandbox."""

from __future__ import annotations

import dataclasses
import json

import pytest
import redis

from devkit import samples
from devkit.local import setup_lines
from ops.cli import main as rainbridge
from shared import keys
from shared.settings import Settings
from tests.helpers import TOKEN, SandboxClient, to_env
from worker import ingest, pause


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in to_env(settings).items():
        monkeypatch.setenv(name, value)
    return settings


def test_status_shows_depths_dead_letters_pause_and_token(
    env: Settings, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    redis_client.xadd(keys.INBOX, {"push": json.dumps(samples.push(timestamp="never")), "receipt": "r"})
    ingest.drain(redis_client, env, "c1", budget_s=0.1)
    for _ in range(3):
        redis_client.xadd(keys.INBOX, {"push": json.dumps(samples.push()), "receipt": "r"})
    pause.pause(redis_client, pause.now_ms() + 60_000, "test")

    # No worker has run here, so the drains are STALLED: status says so and exits 1
    assert rainbridge(["status"]) == 1
    out = capsys.readouterr().out
    assert "STALLED" in out.split("drains:")[1].split("\n")[0]
    assert "inbox" in out and "dead letters: 1 (invalid_payload: 1)" in out
    assert "PAUSED until" in out

    assert rainbridge(["status", "--json"]) == 1
    state = json.loads(capsys.readouterr().out)
    assert state["inbox"]["depth"] == 3
    assert state["deadletters"]["by_reason"] == {"invalid_payload": 1}
    assert state["aep_paused_until_ms"] > pause.now_ms()
    assert TOKEN not in out


def test_check_passes_against_a_durable_redis_and_the_sandbox(
    env: Settings,
    redis_client: redis.Redis,
    sandbox: SandboxClient,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The sandbox set up as the README says an operator sets up AEP.
    assert rainbridge(["aep", "setup", "--apply"]) == 0
    for name, value in setup_lines(capsys.readouterr().out).items():
        monkeypatch.setenv(name, value)

    assert rainbridge(["check"]) == 0
    out = capsys.readouterr().out
    assert "ok    AEP token" in out and "ok    AEP inlet answers" in out
    assert "ok    schema https://ns.adobe.com/acme/schemas/" in out
    assert "verdict: OK" in out
    assert env.aep_client_secret not in out and TOKEN not in out


def test_check_fails_on_a_wrong_inlet_and_an_unsafe_redis(
    env: Settings,
    redis_client: redis.Redis,
    sandbox: SandboxClient,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrong = dataclasses.replace(env, aep_streaming_url=env.aep_single_url.rsplit("/", 1)[0] + "/nope")
    monkeypatch.setenv("AEP_STREAMING_URL", wrong.aep_streaming_url or "")
    redis_client.config_set("appendonly", "no")
    try:
        assert rainbridge(["check"]) == 1
    finally:
        redis_client.config_set("appendonly", "yes")
    out = capsys.readouterr().out
    assert "FAIL  Redis has appendonly=no" in out
    assert "FAIL  AEP inlet answered 404" in out
