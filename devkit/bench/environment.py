"""One benchmark environment: a private Redis, the sandbox, the settings, and small statistics helpers."""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
import requests

from devkit.bench.plan import FILL_CHUNK, KEEP_RUNS_SECONDS, TOKEN, VAR, Plan
from devkit.bench.processes import Profiler, Tracker
from devkit.local import local_settings, settings_env
from devkit.procs import Process, RedisServer, free_port, wait_for
from devkit.samples import push as sample_push
from shared import keys
from shared.records import InboxRecord
from shared.settings import Settings


class Bench:
    """One run: the private Redis and sandbox shared by every section, and what was measured."""

    def __init__(self, plan: Plan, tracker: Tracker) -> None:
        self.plan = plan
        self.tracker = tracker
        self.run_id = uuid.uuid4().hex[:8]
        # A directory per run, so two runs at once (a developer's and CI's) never share files.
        self.work = VAR / f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{self.run_id}"
        self.redis_server: RedisServer | None = None
        self._redis: redis.Redis | None = None
        self.sandbox: Process | None = None
        self.sandbox_url = ""
        self.http = requests.Session()
        self.profiler = Profiler(plan.profile, plan.out, tracker)

    def start(self) -> None:
        """Start Redis and the sandbox, each in its own process."""
        VAR.mkdir(parents=True, exist_ok=True)
        for old in VAR.iterdir():
            if old.is_dir() and time.time() - old.stat().st_mtime > KEEP_RUNS_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        (self.work / "logs").mkdir(parents=True)
        self.redis_server = RedisServer(Path(tempfile.mkdtemp(prefix="redis-", dir=self.work)))
        self.tracker.add("redis-server", self._stop_redis)
        self.redis_server.start()
        self._redis = redis.Redis(port=self.redis_server.port, decode_responses=True, socket_timeout=60)
        port = free_port()
        args = [sys.executable, "-m", "devkit.sandbox", "--port", str(port), "--no-store-bodies"]
        self.sandbox = Process(args, dict(os.environ), self.work / "logs" / "sandbox.log")
        self.tracker.add("sandbox", self.sandbox.stop)
        self.sandbox_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: self.http.get(f"{self.sandbox_url}/sandbox/stats", timeout=1).ok, what="sandbox")

    def _stop_redis(self) -> None:
        if self.redis_server is not None:
            self.redis_server.kill()
            shutil.rmtree(self.redis_server.workdir, ignore_errors=True)  # the AOF can be large

    @property
    def redis(self) -> redis.Redis:
        """A client of the private Redis."""
        assert self._redis is not None
        return self._redis

    @property
    def redis_pid(self) -> int:
        """The redis-server process."""
        assert self.redis_server is not None and self.redis_server.proc is not None
        return self.redis_server.proc.pid

    @property
    def sandbox_pid(self) -> int:
        """The sandbox process."""
        assert self.sandbox is not None
        return self.sandbox.proc.pid

    def settings(self) -> Settings:
        """The pipeline's settings for this run: defaults, except where Redis and AEP are."""
        assert self.redis_server is not None
        return local_settings(self.redis_server.url, self.sandbox_url, receiver_tokens=(TOKEN,))

    def env(self) -> dict[str, str]:
        """Environment variables for the pipeline's processes."""
        return settings_env(self.settings())

    def log(self, name: str) -> Path:
        """Where a process of this run logs."""
        return self.work / "logs" / name

    def fresh(self) -> None:
        """Empty Redis and the sandbox between measurements."""
        self.redis.flushall()
        self.http.post(f"{self.sandbox_url}/sandbox/reset", timeout=10).raise_for_status()

    def sandbox_stats(self) -> dict[str, Any]:
        """The sandbox's counters."""
        resp = self.http.get(f"{self.sandbox_url}/sandbox/stats", timeout=10)
        resp.raise_for_status()
        stats: dict[str, Any] = resp.json()
        return stats

    def sandbox_records(self, kind: str, since: int = 0) -> list[dict[str, Any]]:
        """Every sandbox record of ``kind`` (events or requests) after ``since``, page by page."""
        out: list[dict[str, Any]] = []
        while True:
            resp = self.http.get(
                f"{self.sandbox_url}/sandbox/{kind}", params={"since": since, "limit": 20_000}, timeout=60
            )
            resp.raise_for_status()
            page: list[dict[str, Any]] = resp.json()[kind]
            if not page:
                return out
            out += page
            since = int(page[-1]["seq"])

    def depth(self) -> tuple[int, int]:
        """Entries in the inbox and the outbox (read or not)."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(keys.INBOX)
            pipe.xlen(keys.OUTBOX)
            inbox, outbox = pipe.execute()
        return int(inbox), int(outbox)

    def fill_inbox(self, n: int, tag: str) -> float:
        """XADD ``n`` realistic pushes straight into the inbox, as the receiver would; mean JSON bytes."""
        client = self.redis
        total = 0
        for start in range(0, n, FILL_CHUNK):
            with client.pipeline(transaction=False) as pipe:
                for i in range(start, min(n, start + FILL_CHUNK)):
                    body = encode_push(sample_push(f"{self.run_id}-{tag}-{i:09d}"))
                    total += len(body.encode())
                    pipe.xadd(keys.INBOX, InboxRecord(body, "bench").fields())
                pipe.execute()
        return total / max(n, 1)


def encode_push(push: dict[str, Any]) -> str:
    """A push as the receiver stores it: compact JSON."""
    return json.dumps(push, separators=(",", ":"), ensure_ascii=False)


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, by nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def median(values: list[float]) -> float:
    """Median, NaN when empty."""
    return statistics.median(values) if values else float("nan")


def rates(samples: list[tuple[float, int]]) -> list[tuple[float, float]]:
    """(time, count) samples as (time, count per second) between consecutive samples."""
    return [
        (round(t1, 2), round((c1 - c0) / (t1 - t0), 1))
        for (t0, c0), (t1, c1) in itertools.pairwise(samples)
        if t1 > t0
    ]
