"""The drains' own clock: one tick per stage per second for the whole fleet, and fair slots."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import redis

from devkit.procs import wait_for
from shared import redisconn
from shared.settings import Settings
from worker.drains import STAGE_TASKS, Slots, Ticker


class Sent:
    """Records the ticks a ticker sends, thread-safely."""

    def __init__(self) -> None:
        self.ticks: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, task: str, queue: str, expires: float) -> None:
        assert expires > 0
        with self._lock:
            self.ticks.append((task, queue))

    def count(self, queue: str) -> int:
        with self._lock:
            return sum(1 for task, q in self.ticks if q == queue and task == STAGE_TASKS[queue])


def test_two_workers_send_about_one_tick_per_stage_per_second_between_them(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given two workers' tickers, both consuming both stages
    sent = Sent()
    tickers = [Ticker(settings, ["ingest", "deliver"], sent, redisconn.connect) for _ in range(2)]

    # When they run for four seconds
    for ticker in tickers:
        ticker.start()
    time.sleep(4)
    for ticker in tickers:
        ticker.stop()

    # Then each stage got about four ticks, not eight, and housekeeping got exactly one
    assert 3 <= sent.count("ingest") <= 6, sent.ticks
    assert 3 <= sent.count("deliver") <= 6, sent.ticks
    assert sum(1 for task, _ in sent.ticks if task == "rainbridge.housekeep") == 1


def test_no_tick_is_sent_while_one_of_that_stage_waits_in_its_queue(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given a deliver task waiting in Celery's queue (all processes busy, say)
    redis_client.lpush("deliver", "{}")
    sent = Sent()
    ticker = Ticker(settings, ["ingest", "deliver"], sent, redisconn.connect)

    # When the ticker runs
    ticker.start()
    time.sleep(2.5)

    # Then ingest is ticked but deliver is not, until its queue is empty again
    assert sent.count("ingest") >= 2
    assert sent.count("deliver") == 0
    redis_client.delete("deliver")
    wait_for(lambda: sent.count("deliver") >= 1, timeout=5, what="a deliver tick")
    ticker.stop()


def test_a_worker_narrowed_to_one_stage_ticks_only_that_stage(
    settings: Settings, redis_client: redis.Redis
) -> None:
    sent = Sent()
    ticker = Ticker(settings, ["deliver"], sent, redisconn.connect)
    ticker.start()
    time.sleep(1.5)
    ticker.stop()
    assert sent.count("deliver") >= 1
    assert {queue for _, queue in sent.ticks} == {"deliver"}


def test_a_worker_with_both_stages_keeps_a_process_for_each() -> None:
    assert Slots.for_worker(["ingest", "deliver"], 2).limits == {"ingest": 1, "deliver": 1}
    assert Slots.for_worker(["ingest", "deliver"], 8).limits == {"ingest": 7, "deliver": 7}
    assert Slots.for_worker(["ingest"], 4).limits == {}  # one stage: it may use every process
    assert Slots.for_worker(["ingest", "deliver"], 1).limits == {}  # one process: it takes turns

    slots = Slots.for_worker(["ingest", "deliver"], 2)
    try:
        with slots.hold("ingest") as first:
            assert first
            with slots.hold("ingest") as second, slots.hold("deliver") as other:
                assert not second  # a second ingest would leave delivery no process
                assert other
        with slots.hold("ingest") as again:
            assert again
    finally:
        slots.remove()


def _hold_forever(slots: Slots, ready: multiprocessing.synchronize.Event) -> None:
    with slots.hold("ingest") as held:
        assert held
        ready.set()
        time.sleep(600)


def test_a_slot_held_by_a_sigkilled_process_is_free_again() -> None:
    # Given a pool process (forked, as Celery's are) holding the only ingest slot
    slots = Slots.for_worker(["ingest", "deliver"], 2)
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    child = context.Process(target=_hold_forever, args=(slots, ready))
    child.start()
    try:
        assert ready.wait(10)
        with slots.hold("ingest") as held:
            assert not held

        # When it is SIGKILLed
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)

        # Then the slot is free for the next drain
        with slots.hold("ingest") as held:
            assert held
    finally:
        if child.is_alive():
            child.kill()
        slots.remove()
