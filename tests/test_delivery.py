"""Delivery under failure, stage by stage: real Redis, the AEP sandbox's faults, no Celery."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import redis
import requests

from devkit import samples
from shared import deadletter, keys
from shared.settings import Settings
from tests.helpers import SandboxClient, load
from worker import aep, deliver, pause
from worker.ims import TokenCache


def aep_client(client: redis.Redis, settings: Settings, session: requests.Session) -> aep.AepClient:
    return aep.AepClient(settings, TokenCache(client, settings, session), session)


def run(
    client: redis.Redis, settings: Settings, session: requests.Session, budget_s: float = 0.5
) -> deliver.DeliverSummary:
    return deliver.run(client, settings, "d1", aep_client(client, settings, session), budget_s)


def delivered_ids(sandbox: SandboxClient) -> list[str]:
    return [e["transmissionId"] for e in sandbox.events()]


def collection_requests(sandbox: SandboxClient) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests() if r["path"].startswith("/collection/")]


def test_in_a_207_refused_messages_are_dead_lettered_and_only_failed_ones_are_resent(
    redis_client: redis.Redis, settings: Settings, sandbox: SandboxClient, session: requests.Session
) -> None:
    pushes = [samples.push() for _ in range(6)]
    refused, flaky = pushes[1]["transmissionId"], pushes[4]["transmissionId"]
    load(redis_client, settings, pushes)
    sandbox.faults(
        reject_ids=[refused], reject_status=400, reject_message="field _acme.session.length is not an integer"
    )

    # First request: AEP refuses one message for good
    summary = run(redis_client, settings, session)
    assert (summary.accepted, summary.rejected) == (5, 1)
    (letter,) = deadletter.read_all(redis_client)
    assert letter.reason == deadletter.Reason.AEP_REJECTED
    assert letter.transmission_id == refused
    assert "session.length is not an integer" in letter.parsed_detail
    assert json.loads(letter.xdm)["body"]["xdmEntity"]["_acme"]["transmissionId"] == refused
    assert json.loads(letter.push) == pushes[1]

    # A 5xx for one message in a 207: only that one is sent again, and then it goes through
    more = [samples.push() for _ in range(3)]
    load(redis_client, settings, more)
    sandbox.faults(reject_ids=[more[1]["transmissionId"]], reject_status=503)
    assert run(redis_client, settings, session).retrying == 1
    sandbox.faults(reject_ids=[])
    before = len(collection_requests(sandbox))
    summary = run(redis_client, dataclasses.replace(settings, pending_claim_seconds=1), session, budget_s=2.5)
    assert summary.accepted == 1
    resend = collection_requests(sandbox)[before:]
    assert [r["messages"] for r in resend] == [1]
    ids = delivered_ids(sandbox)
    assert sorted(ids) == sorted(p["transmissionId"] for p in pushes + more if p["transmissionId"] != refused)
    assert flaky in ids
    assert redis_client.xlen(keys.OUTBOX) == 0


def test_a_poison_message_in_a_batch_of_200_is_isolated_and_the_other_199_delivered(
    redis_client: redis.Redis, settings: Settings, sandbox: SandboxClient, session: requests.Session
) -> None:
    pushes = [samples.push() for _ in range(200)]
    poison = pushes[137]["transmissionId"]
    load(redis_client, settings, pushes)
    # AEP refuses the whole request with a 400 whenever the poison message is in it
    sandbox.faults(reject_ids=[poison], reject_mode="request", reject_status=400)

    summary = run(redis_client, settings, session, budget_s=2)

    assert summary.accepted == 199
    assert sorted(delivered_ids(sandbox)) == sorted(
        p["transmissionId"] for p in pushes if p["transmissionId"] != poison
    )
    (letter,) = deadletter.read_all(redis_client)
    assert (letter.reason, letter.transmission_id) == (deadletter.Reason.AEP_REJECTED, poison)
    assert "400" in letter.parsed_detail
    assert len(collection_requests(sandbox)) <= 2 * 8 + 1  # a bisection, not one request per message


def test_a_413_splits_the_batch(
    redis_client: redis.Redis, settings: Settings, sandbox: SandboxClient, session: requests.Session
) -> None:
    pushes = [samples.push() for _ in range(40)]
    load(redis_client, settings, pushes)
    sandbox.faults(fail_next={"count": 1, "status": 413})

    summary = run(redis_client, settings, session)

    assert summary.accepted == 40
    assert [r["status"] for r in collection_requests(sandbox)] == [413, 207, 207]
    assert [r["messages"] for r in collection_requests(sandbox)][1:] == [20, 20]
    assert deadletter.read_all(redis_client) == []


@pytest.mark.parametrize("retry_after", ["2", "date"])
def test_429_with_retry_after_pauses_delivery_for_that_long(
    redis_client: redis.Redis,
    settings: Settings,
    sandbox: SandboxClient,
    session: requests.Session,
    retry_after: str,
) -> None:
    if retry_after == "date":
        retry_after = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    load(redis_client, settings, [samples.push() for _ in range(3)])
    sandbox.faults(fail_next={"count": 1, "status": 429, "retry_after": retry_after})

    started = pause.now_ms()
    summary = run(redis_client, settings, session, budget_s=0.3)

    assert summary.accepted == 0
    until = pause.paused_until(redis_client)
    # The pause runs for Retry-After from AEP's answer (the sandbox's own time of the request)
    refused_at = collection_requests(sandbox)[0]["timeMs"]
    assert until - started >= 1000
    assert 1500 <= until - refused_at <= 3200
    # Whoever runs next during the pause sends nothing, and delivers once it is over
    assert run(redis_client, settings, session, budget_s=0.2).requests == 0
    assert len(collection_requests(sandbox)) == 1
    summary = run(redis_client, settings, session, budget_s=(until - pause.now_ms()) / 1000 + 1.5)
    assert summary.accepted == 3
    assert collection_requests(sandbox)[1]["timeMs"] >= until


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    assert pause.retry_after_ms("5") == 5000
    in_ten = format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True)
    assert 8000 <= (pause.retry_after_ms(in_ten) or 0) <= 10_000
    assert pause.retry_after_ms("not a date") is None
    assert pause.retry_after_ms(None) is None
    assert pause.retry_after_ms("999999") == pause.MAX_RETRY_AFTER_MS


def test_server_errors_back_off_exponentially_with_jitter_up_to_the_cap(
    redis_client: redis.Redis, settings: Settings, sandbox: SandboxClient, session: requests.Session
) -> None:
    capped = dataclasses.replace(settings, delivery_backoff_cap_seconds=2)
    load(redis_client, capped, [samples.push()])
    sandbox.faults(fail_next={"count": 4, "status": 500})

    waits = []
    for attempt in range(4):
        redis_client.delete(keys.PAUSE)
        started = pause.now_ms()
        run(redis_client, capped, session, budget_s=0.05)
        until = pause.paused_until(redis_client)
        waits.append(until - started if until else 0)
        statuses = [r["status"] for r in collection_requests(sandbox)]
        assert statuses[: attempt + 1] == [500] * (attempt + 1)
        if 207 not in statuses:
            # A zero jitter can let the same run retry at once, so count what AEP actually saw
            assert int(redis_client.get(pause.FAILURES) or 0) == statuses.count(500)
    assert all(0 <= w <= 2000 + 100 for w in waits)

    redis_client.delete(keys.PAUSE)
    run(redis_client, capped, session, budget_s=0.3)
    assert [r["status"] for r in collection_requests(sandbox)] == [500] * 4 + [207]
    assert redis_client.get(pause.FAILURES) is None  # success resets the back-off


def test_an_expired_token_is_replaced_once_and_the_batch_delivered(
    redis_client: redis.Redis, settings: Settings, sandbox: SandboxClient, session: requests.Session
) -> None:
    load(redis_client, settings, [samples.push()])
    assert run(redis_client, settings, session).accepted == 1
    sandbox.faults(expire_tokens=True)
    load(redis_client, settings, [samples.push() for _ in range(2)])

    assert run(redis_client, settings, session).accepted == 2
    assert sandbox.stats()["tokens_minted"] == 2
    assert [r["status"] for r in collection_requests(sandbox)] == [207, 401, 207]


def test_a_wrong_inlet_pauses_delivery_and_dead_letters_nothing(
    redis_client: redis.Redis,
    settings: Settings,
    sandbox: SandboxClient,
    session: requests.Session,
    caplog: Any,
) -> None:
    wrong = dataclasses.replace(
        settings, aep_streaming_url=settings.aep_single_url.rsplit("/", 1)[0] + "/unknown"
    )
    load(redis_client, wrong, [samples.push()])

    summary = run(redis_client, wrong, session, budget_s=0.3)

    assert summary.accepted == 0
    assert deadletter.read_all(redis_client) == []
    assert pause.paused_until(redis_client) - pause.now_ms() > 50_000
    assert any(r.levelname == "ERROR" and "404" in r.getMessage() for r in caplog.records)
    assert redis_client.xlen(keys.OUTBOX) == 1


def test_after_max_attempts_a_message_is_dead_lettered_as_delivery_exhausted(
    redis_client: redis.Redis, settings: Settings, sandbox: SandboxClient, session: requests.Session
) -> None:
    limited = dataclasses.replace(settings, delivery_max_attempts=2, pending_claim_seconds=1)
    push = samples.push()
    load(redis_client, limited, [push])
    sandbox.faults(fail_next={"count": 10, "status": 500})

    deadline = time.monotonic() + 15
    while not deadletter.read_all(redis_client) and time.monotonic() < deadline:
        redis_client.delete(keys.PAUSE)
        run(redis_client, limited, session, budget_s=0.3)

    (letter,) = deadletter.read_all(redis_client)
    assert (letter.reason, letter.transmission_id, letter.attempts) == (
        deadletter.Reason.DELIVERY_EXHAUSTED,
        push["transmissionId"],
        2,
    )
    assert len(collection_requests(sandbox)) == 2
    assert redis_client.xlen(keys.OUTBOX) == 0


def test_an_event_over_10_kb_is_dead_lettered_before_sending_with_its_size(
    redis_client: redis.Redis, settings: Settings, sandbox: SandboxClient, session: requests.Session
) -> None:
    big = samples.push(
        lead={"leadId": "L1", "note": "n" * 4000}, session={"title": "t" * 4000, "code": "c" * 3000}
    )
    load(redis_client, settings, [big])

    (letter,) = deadletter.read_all(redis_client)
    assert letter.reason == deadletter.Reason.EVENT_TOO_LARGE
    assert "bytes" in letter.parsed_detail
    assert redis_client.xlen(keys.OUTBOX) == 0


def test_raw_mode_sends_each_push_unchanged_to_the_single_endpoint(
    redis_client: redis.Redis, settings: Settings, sandbox: SandboxClient, session: requests.Session
) -> None:
    raw = dataclasses.replace(settings, aep_payload_mode="raw", aep_flow_id="flow-123", aep_tenant_id=None)
    pushes = [samples.push() for _ in range(3)]
    load(redis_client, raw, pushes)
    sandbox.faults(reject_ids=[pushes[2]["transmissionId"]], reject_status=400)

    summary = run(redis_client, raw, session, budget_s=1)

    assert (summary.accepted, summary.rejected) == (2, 1)
    events = sandbox.events()
    assert [e["message"] for e in events] == pushes[:2]
    assert all(
        r["path"] == "/collection/" + raw.aep_single_url.rsplit("/", 1)[1]
        for r in collection_requests(sandbox)
    )
    assert all(r["headers"]["x-adobe-flow-id"] == "flow-123" for r in collection_requests(sandbox))
    (letter,) = deadletter.read_all(redis_client)
    assert letter.reason == deadletter.Reason.AEP_REJECTED
