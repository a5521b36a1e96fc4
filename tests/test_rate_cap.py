"""``AEP_MAX_MESSAGES_PER_SECOND``: one bucket in Redis that every worker on every host shares."""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from flask import Flask

from devkit import samples
from shared.settings import ConfigError, Settings
from tests.helpers import TOKEN, Pipeline, SandboxClient
from worker.ratecap import RateCap, per_request

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def busiest_second(times_and_counts: list[tuple[float, int]]) -> int:
    """The most messages in any one-second window [t, t + 1) starting at a request."""
    ordered = sorted(times_and_counts)
    most = 0
    for i, (start, _) in enumerate(ordered):
        in_window = sum(count for when, count in ordered[i:] if when < start + 1.0)
        most = max(most, in_window)
    return most


def test_two_takers_of_one_bucket_are_given_turns_at_the_cap(redis_client: redis.Redis) -> None:
    # Given two handles on the bucket (two processes, as far as Redis can tell), a cap of 400/s
    first, second = RateCap(redis_client, 400), RateCap(redis_client, 400)
    size = per_request(400)
    assert size == 10

    # When both book 100 requests of 10 at once (10 s of messages)
    turns = [cap.book(size) for _ in range(100) for cap in (first, second)]

    # Then the first goes at once (the burst), and each next one 10/400 s after the one before:
    # whoever asks, one schedule
    assert turns[0] == 0
    gaps = [later - earlier for earlier, later in itertools.pairwise(turns)]
    assert all(abs(gap - size / 400) < 0.005 for gap in gaps[1:]), gaps[:5]
    assert abs(turns[-1] - (200 * size - 2 * size) / 400) < 0.05


def test_the_cap_is_checked_at_start() -> None:
    with pytest.raises(ConfigError, match="AEP_MAX_MESSAGES_PER_SECOND"):
        Settings.from_env({"AEP_MAX_MESSAGES_PER_SECOND": "0"})
    capped = Settings.from_env({"AEP_MAX_MESSAGES_PER_SECOND": "200"})
    assert capped.messages_per_request == 5  # a fortieth of a second's worth per request
    assert Settings.from_env({}).messages_per_request == 200


@pytest.mark.slow
def test_two_workers_drain_a_backlog_at_the_cap_and_no_faster(
    settings: Settings,
    sandbox: SandboxClient,
    redis_client: redis.Redis,
    make_app: Callable[[Settings], Flask],
    tmp_path: Path,
) -> None:
    capped = dataclasses.replace(settings, aep_max_messages_per_second=200)
    # Given 3,000 pushes queued before any worker runs
    receiver = make_app(capped).test_client()
    pushes = [samples.push() for _ in range(3000)]
    for start in range(0, len(pushes), 500):
        answer = receiver.post("/v1/pushes", json=pushes[start : start + 500], headers=AUTH)
        assert answer.status_code == 202, answer.get_json()

    # When two workers drain them under a cap of 200/s
    pipeline = Pipeline(capped, tmp_path)
    pipeline.start_worker()
    pipeline.start_worker()
    try:
        sandbox.wait_for_events(3000, timeout=60)
    finally:
        pipeline.stop()

    # Then AEP never saw more than the cap (+10 %) in any second, in requests of 5
    sent = [(r["timeMs"] / 1000, r["messages"]) for r in sandbox.requests() if r["messages"]]
    assert sum(count for _, count in sent) == 3000
    assert max(count for _, count in sent) == 5
    assert busiest_second(sent) <= 220
    # and the drain took the time the cap implies: 3,000 at 200/s is 15 s, less one burst
    span = max(t for t, _ in sent) - min(t for t, _ in sent)
    assert span >= (3000 - 5 - 5) / 200
    assert span <= 15 * 1.5
    # and both workers sent some of them (one bucket, not one per process)
    for worker in pipeline.workers:
        assert re.search(r"deliver: [1-9]\d* request", worker.output()), worker.output()[-2000:]
    print(f"\ncap 200/s, 2 workers: busiest second {busiest_second(sent)} messages, 3,000 in {span:.1f} s")
