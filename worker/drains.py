"""Keeping the drains going, with no scheduler to lose: every worker ticks the stages it consumes.

Each worker's main process runs a :class:`Ticker` thread. Once a second, for each stage whose
queue the worker consumes, it asks Redis for that second's tick (a lease shared by the fleet)
and, if it got it and no task of that stage is already waiting in the queue, sends one. So the
fleet sends about one tick per stage per second however many workers run, the drains go on as
long as any worker of a stage is alive, and a worker that dies takes nothing with it.

A drain that finds a backlog queues its own successor (see :mod:`worker.tasks`), so busy stages
run back to back; the tick only restarts a stage that went idle. Within one worker that consumes
both queues, :class:`Slots` keeps one process free for the other stage: otherwise two ingest runs
could hold both processes while delivery waits, which is what made delivery latency spike.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis

from shared import keys
from shared.settings import Settings
from worker import scripts

log = logging.getLogger(__name__)

#: The stages a worker can drain, by queue name, and their task names.
STAGE_TASKS = {"ingest": "rainbridge.ingest", "deliver": "rainbridge.deliver"}
HOUSEKEEP_TASK = "rainbridge.housekeep"

#: How often the fleet starts an idle stage, and how often it forgets old consumers (seconds).
TICK_SECONDS = 1.0
HOUSEKEEP_SECONDS = 60.0

#: How long a tick or a drain's successor may wait to run before Celery discards it (seconds).
#: A worker far from Redis can take several seconds from send to start (200 ms round trips made
#: most 2 s ones expire, stalling the stages until a tick got through; tests/test_hosts.py). A
#: late one is harmless: a drain of an empty stream does nothing, and ticks never pile up (one is
#: sent only while the stage's queue is empty).
STAGE_TASK_EXPIRES_SECONDS = 30.0

# Sends a tick only when this second's lease is free and nothing of the stage is queued, so
# ticks never pile up behind busy workers. Celery's Redis transport keeps a queue as a list
# named after it (priority 0, the only one rainbridge uses).
_TICK_SCRIPT = scripts.load("tick")


def record_run(client: redis.Redis, stage: str) -> None:
    """Note that a drain of ``stage`` just ran (``rainbridge status`` and ``/metrics`` read it)."""
    client.hset(keys.DRAINS, stage, int(time.time() * 1000))


class Ticker:
    """The thread in a worker's main process that sends the ticks for the stages it consumes."""

    def __init__(
        self,
        settings: Settings,
        queues: list[str],
        send: Callable[[str, str, float], None],
        connect: Callable[[Settings], redis.Redis],
    ) -> None:
        self._settings = settings
        self._stages = [queue for queue in queues if queue in STAGE_TASKS]
        self._send = send
        self._connect = connect
        self._owner = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rainbridge-ticker", daemon=True)
        self._failing = False

    @property
    def stages(self) -> list[str]:
        """The stage queues this worker ticks."""
        return list(self._stages)

    def start(self) -> None:
        """Start ticking (at once: a fresh worker should not wait a second to be useful)."""
        if self._stages:
            self._thread.start()

    def stop(self) -> None:
        """Stop ticking; a tick already sent still runs."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        client = self._connect(self._settings)
        script = client.register_script(_TICK_SCRIPT)
        # A little shorter than the tick, so this worker's next tick never finds its own lease.
        lease_ms = int(TICK_SECONDS * 900)
        next_housekeep = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                for stage in self._stages:
                    lease = f"{keys.TICK_PREFIX}{stage}"
                    if script(keys=[lease, stage], args=[self._owner, lease_ms]):
                        self._send(STAGE_TASKS[stage], stage, STAGE_TASK_EXPIRES_SECONDS)
                if started >= next_housekeep:
                    lease = f"{keys.TICK_PREFIX}housekeep"
                    if client.set(lease, self._owner, nx=True, px=int(HOUSEKEEP_SECONDS * 1000)):
                        self._send(HOUSEKEEP_TASK, self._stages[0], HOUSEKEEP_SECONDS)
                    next_housekeep = started + HOUSEKEEP_SECONDS
                if self._failing:
                    log.info("ticker: Redis is back; ticking %s again", ", ".join(self._stages))
                    self._failing = False
            except Exception as exc:
                # Redis away (or a broker hiccup): the drains pause with it and resume on their own.
                if not self._failing:
                    log.warning("ticker: cannot tick (%s); retrying every second", exc)
                    self._failing = True
            self._stop.wait(max(0.05, TICK_SECONDS - (time.monotonic() - started)))


class Slots:
    """How many processes of this worker each stage may hold at once; crash-safe via file locks.

    A lock held with ``flock`` is released by the kernel when its process dies, so a SIGKILLed
    pool process never keeps a slot.
    """

    def __init__(self, limits: dict[str, int]) -> None:
        self.limits = limits
        self.directory = Path(tempfile.mkdtemp(prefix="rainbridge-slots-")) if limits else None

    @classmethod
    def for_worker(cls, queues: list[str], concurrency: int) -> Slots:
        """Limits for a worker: with both stages and 2+ processes, each stage leaves one to the other."""
        stages = [queue for queue in queues if queue in STAGE_TASKS]
        if len(stages) < 2 or concurrency < 2:
            return cls({})
        return cls({stage: concurrency - 1 for stage in stages})

    @contextlib.contextmanager
    def hold(self, stage: str) -> Iterator[bool]:
        """Yield True while holding a slot of ``stage`` (always, when the stage has no limit)."""
        limit = self.limits.get(stage)
        if limit is None or self.directory is None:
            yield True
            return
        for number in range(limit):
            handle = open(self.directory / f"{stage}-{number}", "a")  # noqa: SIM115 - held below
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        yield False

    def remove(self) -> None:
        """Delete the lock files (the worker is shutting down)."""
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
