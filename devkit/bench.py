"""The benchmark: ``python -m devkit.bench [--quick] [--only SECTIONS] [--out DIR] [--profile]``.

Everything runs on this machine, on loopback, against a private redis-server and the AEP sandbox
(in its own process, bodies not stored). Speed is reported as ratios measured in the same run,
because the machine is shared: the load average at the start of each section is recorded so a
noisy run shows. Sections:

1. ``receiver``: the receiver under gunicorn (2 sync workers) against a baseline Flask endpoint
   that only parses JSON, and the same endpoint plus one XADD (:mod:`devkit.bench_baseline`),
   same config, interleaved rounds, load from wrk (or a Python load generator); no workers run,
   Redis is flushed between rounds.
2. ``drain``: N pushes already in the inbox, drained by one Celery worker (2 processes)
   until the sandbox accepted them all; then the same N as one Celery task per push
   (:mod:`devkit.bench_naive`).
3. ``sustained``: a fixed offered rate through the receiver with everything running; delivered
   rate, backlog, and delivery latency (202 received → accepted by the sandbox).
4. ``batching``: AEP requests per 1,000 events under that load, and latency at a trickle.
5. ``memory``: Redis bytes per queued push; worker RSS over a long drain.

It prints one table and writes ``results.json`` and ``results.png`` to ``--out`` (and, with
``--profile``, py-spy's collapsed stacks as ``profile-<section>-<process>.txt``). Process logs go
to ``var/bench/``. Every process it starts is stopped at the end, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
import requests

from devkit.local import local_settings, settings_env
from devkit.procfs import children, cpu_seconds, rss_bytes
from devkit.procs import BIN, ROOT, Process, RedisServer, celery_worker, free_port, wait_for
from devkit.samples import push as sample_push
from devkit.sandbox import SandboxConfig
from shared import keys
from shared.records import InboxRecord, LetterRecord
from shared.settings import Settings

SECTIONS = ("receiver", "drain", "sustained", "batching", "memory", "scrape")
TOKEN = "bench-token-0123456789abcdef"  # noqa: S105 - the private receiver's only token
SANDBOX = SandboxConfig()
VAR = ROOT / "var" / "bench"
#: Older runs' directories under VAR are removed; a run's own stays for its logs.
KEEP_RUNS_SECONDS = 24 * 3600
#: A placeholder that survives JSON encoding, replaced by each request's transmissionId.
TID_MARK = "@@TID@@"
#: Pushes per pipelined round trip when filling a stream.
FILL_CHUNK = 1000


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to run and how big; ``--quick`` shrinks every section to a few minutes in all."""

    sections: tuple[str, ...]
    out: Path
    quick: bool = False
    profile: bool = False
    #: "wrk" when it is installed, else "python"; the Python generator can be asked for by name.
    load_generator: str = "wrk"
    rounds: int = 3
    round_seconds: float = 10.0
    warmup_seconds: float = 2.0
    connections: int = 16
    drain_n: int = 100_000
    rate: int = 1000
    sustained_seconds: float = 60.0
    trickle_seconds: float = 30.0
    memory_queue_n: int = 100_000
    memory_drain_n: int = 1_000_000

    @classmethod
    def build(cls, args: argparse.Namespace) -> Plan:
        """The plan for these command-line arguments."""
        sections = tuple(s for s in SECTIONS if s in set(args.only.split(","))) if args.only else SECTIONS
        unknown = set(args.only.split(",")) - set(SECTIONS) if args.only else set()
        if unknown or not sections:
            raise SystemExit(f"bench: --only takes a comma-separated list of {', '.join(SECTIONS)}")
        generator = args.load_generator or ("wrk" if shutil.which("wrk") else "python")
        plan = cls(
            sections=sections,
            out=Path(args.out),
            quick=args.quick,
            profile=args.profile,
            load_generator=generator,
        )
        if args.quick:
            plan = dataclasses.replace(
                plan,
                rounds=2,
                round_seconds=5.0,
                warmup_seconds=1.0,
                drain_n=20_000,
                sustained_seconds=15.0,
                trickle_seconds=10.0,
                memory_drain_n=100_000,
            )
        overrides = {
            "drain_n": args.drain_n,
            "rate": args.rate,
            "sustained_seconds": args.duration,
            "memory_drain_n": args.memory_n,
        }
        return dataclasses.replace(plan, **{k: v for k, v in overrides.items() if v is not None})


# --- processes ---------------------------------------------------------------------------------


class Tracker:
    """Stops what was started, newest first: at the end of a section, and all of it at exit."""

    def __init__(self) -> None:
        self._stoppers: list[tuple[str, Callable[[], None]]] = []

    def add(self, name: str, stop: Callable[[], None]) -> None:
        """Remember how to stop ``name``."""
        self._stoppers.append((name, stop))

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Stop on exit whatever was started inside the block."""
        mark = len(self._stoppers)
        try:
            yield
        finally:
            self.unwind(mark)

    def unwind(self, mark: int = 0) -> None:
        """Stop everything added after ``mark``."""
        while len(self._stoppers) > mark:
            name, stop = self._stoppers[-1]
            try:
                stop()
            except Exception as exc:
                print(f"bench: could not stop {name}: {exc}", file=sys.stderr)
            # Popped only once stopped, so an interrupted stop is tried again by the final unwind.
            self._stoppers.pop()


class CpuMeter:
    """CPU seconds used by named processes between ``start()`` and ``stop()``."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}
        self._t0 = 0.0

    def _now(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.pids.items()}

    def start(self) -> None:
        """Take the first reading."""
        self._t0 = time.monotonic()
        self._start = self._now()

    def stop(self) -> dict[str, Any]:
        """CPU seconds per process and as a share of the machine over the interval."""
        wall = max(time.monotonic() - self._t0, 1e-6)
        used = {name: round(v - self._start.get(name, 0.0), 2) for name, v in self._now().items()}
        cores = os.cpu_count() or 1
        return {
            "wall_s": round(wall, 2),
            "cpu_s": used,
            "share_of_machine": {name: round(v / (wall * cores), 3) for name, v in used.items()},
        }


def wait_ready(proc: Process, what: str, timeout: float = 60) -> None:
    """Wait for a Celery worker's "ready." line; fail with its log if it died first."""
    wait_for(lambda: "ready." in proc.output() or not proc.alive(), timeout=timeout, what=what)
    if not proc.alive():
        raise RuntimeError(f"{what} exited:\n{proc.output()[-3000:]}")


def gunicorn_app(env: dict[str, str], app: str, port: int, log: Path, *flags: str) -> Process:
    """``app`` under gunicorn as the README runs it: 2 workers of the class gunicorn.conf.py sets."""
    args = [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "2", *flags, app]
    return Process(args, env, log)


def naive_worker(env: dict[str, str], log: Path) -> Process:
    """The one-task-per-push worker, with the same flags as the real one."""
    from devkit import bench_naive  # noqa: PLC0415 - loads the worker modules; the load generator needs none

    args = [
        str(BIN / "celery"), "-A", "devkit.bench_naive", "worker",
        "--loglevel", "INFO", "--pool", "prefork", "--concurrency", "2",
        "--queues", bench_naive.QUEUE, "--hostname", "naive@%h", "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    return Process(args, env, log)


class Profiler:
    """py-spy recorders attached to running processes, stopped (and summarised) on demand."""

    def __init__(self, enabled: bool, out: Path, tracker: Tracker) -> None:
        self.enabled = enabled
        self.out = out
        self.tracker = tracker
        self._running: list[tuple[str, Path, subprocess.Popen[bytes], float]] = []

    def attach(self, role: str, pids: list[int]) -> None:
        """Start recording every pid in ``pids`` as ``role``; a no-op unless profiling."""
        if not self.enabled:
            return
        spy = shutil.which("py-spy") or str(BIN / "py-spy")
        for n, pid in enumerate(pids, 1):
            path = self.out / f"profile-{role}{'-' + str(n) if len(pids) > 1 else ''}.txt"
            args = [spy, "record", "--pid", str(pid), "--rate", "100", "--nonblocking", "--format", "raw"]
            args += ["--full-filenames", "-o", str(path)]
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.tracker.add(f"py-spy {role}", functools.partial(_stop_spy, proc))
            self._running.append((role, path, proc, time.monotonic()))

    def collect(self) -> dict[str, Any]:
        """Stop every recorder and summarise the samples by role."""
        by_role: dict[str, list[Path]] = {}
        seconds: dict[str, float] = {}
        for role, path, proc, started in self._running:
            seconds[role] = seconds.get(role, 0.0) + time.monotonic() - started
            _stop_spy(proc)
            by_role.setdefault(role, []).append(path)
        self._running = []
        return {role: summarize_profile(paths, seconds[role]) for role, paths in by_role.items() if paths}


def _stop_spy(proc: subprocess.Popen[bytes]) -> None:
    # SIGINT makes py-spy write what it recorded; SIGKILL only if it does not finish.
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


# --- the environment: Redis, the sandbox, settings ----------------------------------------------


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


# --- load generation --------------------------------------------------------------------------


def push_template() -> tuple[str, str]:
    """A ~600-byte push as JSON, split around its transmissionId."""
    head, tail = encode_push(sample_push(TID_MARK)).split(TID_MARK)
    return head, tail


WRK_SCRIPT = """
wrk.method = "POST"
wrk.path = "/v1/pushes"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
local head = [==[%(head)s]==]
local tail = [==[%(tail)s]==]
local threads = 0
local counter = 0
function setup(thread)
  threads = threads + 1
  thread:set("tn", threads)
end
function request()
  counter = counter + 1
  return wrk.format(nil, nil, nil, head .. "%(run)s-" .. tn .. "-" .. counter .. tail)
end
function done(summary, latency, requests)
  local p = {}
  for _, q in ipairs({50, 75, 90, 95, 99, 99.9}) do
    p[#p + 1] = string.format('"%%s":%%d', q, latency:percentile(q))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d,"mean_us":%%.1f,"max_us":%%d,"percentiles_us":{%%s}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, table.concat(p, ",")))
end
"""


def wrk_round(url: str, script: Path, seconds: float, connections: int) -> dict[str, Any]:
    """One wrk run against ``url``: req/s, latency percentiles (ms), errors."""
    args = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds:g}s", "--timeout", "5s"]
    args += ["-s", str(script), url]
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {done.stdout[-500:]} {done.stderr[-500:]}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    # wrk counts a status >= 400 as an error; our apps answer 202, so that is every non-2xx here.
    return {
        "requests": raw["requests"],
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": raw["percentiles_us"]["50"] / 1000,
        "p99_ms": raw["percentiles_us"]["99"] / 1000,
        "percentiles_ms": {q: v / 1000 for q, v in raw["percentiles_us"].items()},
        "non2xx": raw["status"],
        "socket_errors": raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
    }


def python_round(url: str, seconds: float, connections: int, work: Path, run_id: str) -> dict[str, Any]:
    """The same measurement as :func:`wrk_round` with the Python load generator (no wrk here)."""
    records = run_loadgen(
        {"url": url, "mode": "closed", "concurrency": connections, "duration": seconds},
        work,
        f"{run_id}-{uuid.uuid4().hex[:6]}",
    )
    lat = [(r[3] - r[2]) * 1000 for r in records]
    span = max(r[3] for r in records) - min(r[2] for r in records) if records else 1.0
    ok = sum(1 for r in records if 200 <= r[4] < 300)
    return {
        "requests": len(records),
        "rps": round(len(records) / span, 1),
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "percentiles_ms": {str(q): pct(lat, q) for q in (50, 75, 90, 95, 99, 99.9)},
        "non2xx": sum(1 for r in records if r[4] and not 200 <= r[4] < 300),
        "socket_errors": sum(1 for r in records if r[4] == 0),
        "ok": ok,
    }


def run_loadgen(spec: dict[str, Any], work: Path, tid_prefix: str) -> list[list[Any]]:
    """Run the load generator in its own process; its records [i, due, sent, acked, status]."""
    head, tail = push_template()
    spec = {**spec, "token": TOKEN, "head": head, "tail": tail, "tid_prefix": tid_prefix}
    spec_path, out_path = work / f"loadgen-{tid_prefix}.json", work / f"loadgen-{tid_prefix}.out.json"
    spec_path.write_text(json.dumps(spec))
    args = [sys.executable, "-m", "devkit.bench", "_loadgen", str(spec_path), str(out_path)]
    subprocess.run(args, cwd=ROOT, timeout=float(spec["duration"]) + 120, check=True)
    records: list[list[Any]] = json.loads(out_path.read_text())["records"]
    spec_path.unlink()
    out_path.unlink()
    return records


def loadgen_main(spec_path: str, out_path: str) -> int:
    """Entry point of the load-generator process."""
    spec = json.loads(Path(spec_path).read_text())
    started = time.process_time()
    records = asyncio.run(_generate(spec))
    # Its own CPU time, measured here: once it has exited, /proc no longer has it.
    out = {"records": records, "cpu_s": round(time.process_time() - started, 2)}
    Path(out_path).write_text(json.dumps(out))
    return 0


class _Requester:
    """Sends one push per connection, as the receiver's clients do, and records what happened."""

    def __init__(self, spec: dict[str, Any]) -> None:
        url = re.match(r"http://([^:/]+):(\d+)(/.*)", spec["url"])
        assert url is not None, spec["url"]
        self.host, self.port, path = url.group(1), int(url.group(2)), url.group(3)
        self.head, self.tail, self.prefix = spec["head"].encode(), spec["tail"].encode(), spec["tid_prefix"]
        self.request_head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {spec['token']}\r\nContent-Type: application/json\r\n"
            "Connection: close\r\nContent-Length: %d\r\n\r\n"
        )
        #: [i, due, sent, answered, status] per request, times in epoch seconds; status 0 = no answer.
        self.records: list[list[Any]] = []

    async def one(self, i: int, due: float) -> None:
        """POST push ``i`` and wait for the whole answer."""
        loop = asyncio.get_running_loop()
        body = self.head + f"{self.prefix}-{i:08d}".encode() + self.tail
        sent = time.time()
        status = 0
        # Raw non-blocking sockets: asyncio's streams cost a third more CPU, taken from the pipeline.
        sock = socket.socket()
        sock.setblocking(False)
        try:
            async with asyncio.timeout(10):
                await loop.sock_connect(sock, (self.host, self.port))
                await loop.sock_sendall(sock, (self.request_head % len(body)).encode() + body)
                # Gunicorn's sync workers close the connection after each answer: read to the end.
                answer = b""
                while chunk := await loop.sock_recv(sock, 65536):
                    answer += chunk
            status = int(answer[9:12]) if answer.startswith(b"HTTP/1.") else 0
        except (OSError, TimeoutError, ValueError):
            status = 0
        finally:
            sock.close()
        self.records.append([i, due, sent, time.time(), status])


async def _generate(spec: dict[str, Any]) -> list[list[Any]]:
    """Open loop (``rate`` per second, on schedule whatever the answers) or closed loop (``concurrency``)."""
    requester = _Requester(spec)
    duration = float(spec["duration"])
    if spec["mode"] == "closed":
        deadline = time.monotonic() + duration
        counter = itertools.count()

        async def user() -> None:
            while time.monotonic() < deadline:
                await requester.one(next(counter), time.time())

        await asyncio.gather(*(user() for _ in range(int(spec["concurrency"]))))
        return requester.records

    rate = float(spec["rate"])
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(512)  # bounded, so a stalled receiver cannot exhaust sockets
    tasks: set[asyncio.Task[None]] = set()
    start_mono, start_wall = loop.time(), time.time()

    async def bounded(i: int, due: float) -> None:
        async with limit:
            await requester.one(i, due)

    for i in range(round(rate * duration)):
        delay = start_mono + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(bounded(i, start_wall + i / rate))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*list(tasks))
    return requester.records


# --- sections ---------------------------------------------------------------------------------


def _healthy(http: requests.Session, url: str) -> bool:
    return http.get(url, timeout=1).ok


def section_receiver(bench: Bench) -> dict[str, Any]:
    """The receiver against the baseline, interleaved rounds, no workers running."""
    plan = bench.plan
    env = bench.env()
    use_wrk = plan.load_generator == "wrk"
    script = bench.work / "push.lua"
    head, tail = push_template()
    script.write_text(WRK_SCRIPT % {"token": TOKEN, "head": head, "tail": tail, "run": bench.run_id})
    apps = {
        "baseline": "devkit.bench_baseline:create_app()",
        "xadd": "devkit.bench_baseline:create_xadd_app()",
        "receiver": "receiver.app:create_app()",
        # The same floor on gunicorn's sync worker, which slow clients can stall (see receiver.server).
        "xadd_sync": "devkit.bench_baseline:create_xadd_app()",
    }
    urls: dict[str, str] = {}
    servers: dict[str, Process] = {}
    for name, target in apps.items():
        port = free_port()
        flags = ("--worker-class", "sync") if name.endswith("_sync") else ()
        servers[name] = gunicorn_app(env, target, port, bench.log(f"gunicorn-{name}.log"), *flags)
        bench.tracker.add(f"gunicorn {name}", servers[name].stop)
        urls[name] = f"http://127.0.0.1:{port}/v1/pushes"
    for name, url in urls.items():
        health = url.replace("/v1/pushes", "/healthz")
        wait_for(functools.partial(_healthy, bench.http, health), timeout=30, what=f"gunicorn {name}")

    def measure(name: str, seconds: float) -> dict[str, Any]:
        bench.redis.flushall()
        server = servers[name].proc.pid
        meter = CpuMeter({"gunicorn": [server, *children(server)], "redis-server": [bench.redis_pid]})
        meter.start()
        if use_wrk:
            result = wrk_round(urls[name], script, seconds, plan.connections)
        else:
            result = python_round(urls[name], seconds, plan.connections, bench.work, bench.run_id)
        cpu = meter.stop()["cpu_s"]
        # CPU per request varies less than req/s on a shared machine: it is what contention cannot hide.
        result["gunicorn_cpu_us_per_request"] = round(cpu["gunicorn"] / max(result["requests"], 1) * 1e6, 1)
        result["redis_cpu_us_per_request"] = round(cpu["redis-server"] / max(result["requests"], 1) * 1e6, 1)
        return result

    rounds: list[dict[str, Any]] = []
    for n in range(plan.rounds):
        for name in apps:
            measure(name, plan.warmup_seconds)  # connections, caches, and the JIT-less warm path
            result = measure(name, plan.round_seconds)
            result.update(app=name, round=n + 1, flagged=bool(result["non2xx"] or result["socket_errors"]))
            rounds.append(result)
            line = f"  receiver round {n + 1} {name:8s} {result['rps']:8.0f} req/s"
            line += (
                f"  p50 {result['p50_ms']:.1f} ms  p99 {result['p99_ms']:.1f} ms  non-2xx {result['non2xx']}"
            )
            print(line, flush=True)
    profile: dict[str, Any] = {}
    if bench.profiler.enabled:
        # An extra round, not counted: py-spy takes CPU from the very processes it watches.
        bench.profiler.attach("receiver-gunicorn", children(servers["receiver"].proc.pid))
        measure("receiver", plan.round_seconds)
        profile = bench.profiler.collect()
    summary: dict[str, Any] = {}
    for name in apps:
        good = [r for r in rounds if r["app"] == name and not r["flagged"]]
        summary[name] = {
            "rps": median([r["rps"] for r in good]),
            "p50_ms": median([r["p50_ms"] for r in good]),
            "p99_ms": median([r["p99_ms"] for r in good]),
            "cpu_us_per_request": median([r["gunicorn_cpu_us_per_request"] for r in good]),
            "rounds_counted": len(good),
            "rounds_flagged": sum(1 for r in rounds if r["app"] == name and r["flagged"]),
            "non2xx": sum(r["non2xx"] for r in rounds if r["app"] == name),
            "socket_errors": sum(r["socket_errors"] for r in rounds if r["app"] == name),
        }
    base, recv = summary["baseline"], summary["receiver"]
    return {
        "load_generator": "wrk" if use_wrk else "python",
        "connections": plan.connections,
        "gunicorn": "2 workers of receiver.server.Worker (gevent), no access log; xadd_sync: 2 sync workers",
        "round_seconds": plan.round_seconds,
        "rounds": rounds,
        **summary,
        "rps_ratio": recv["rps"] / base["rps"] if base["rps"] else float("nan"),
        "rps_ratio_to_xadd": recv["rps"] / summary["xadd"]["rps"] if summary["xadd"]["rps"] else float("nan"),
        "xadd_rps_ratio": summary["xadd"]["rps"] / base["rps"] if base["rps"] else float("nan"),
        "p99_ratio": recv["p99_ms"] / base["p99_ms"] if base["p99_ms"] else float("nan"),
        "p99_ratio_to_xadd": recv["p99_ms"] / summary["xadd"]["p99_ms"]
        if summary["xadd"]["p99_ms"]
        else float("nan"),
        "profile": profile,
    }


def measure_prepare(bench: Bench, n: int = 2000) -> dict[str, float]:
    """In-process CPU cost per push of each ingest step (one core, no Redis), in microseconds."""
    from worker import streams  # noqa: PLC0415 - imported late: the worker modules read settings
    from worker.ingest import prepare  # noqa: PLC0415
    from worker.transform import check_size, encode, envelope, to_xdm  # noqa: PLC0415
    from worker.validate import validate  # noqa: PLC0415

    settings = bench.settings()
    bodies = [encode_push(sample_push(f"{bench.run_id}-prep-{i}")) for i in range(n)]
    entries = [streams.Entry(f"{int(time.time() * 1000)}-{i}", {"push": b}) for i, b in enumerate(bodies)]

    def timed(step: Callable[[int], object]) -> float:
        best = float("inf")
        for _ in range(3):  # best of three: the machine is shared, the cost is the floor
            start = time.perf_counter()
            for i in range(n):
                step(i)
            best = min(best, time.perf_counter() - start)
        return round(best / n * 1e6, 1)

    def encode_and_check(i: int) -> str:
        check_size(encode(events[i]))
        return encode(envelope(events[i], settings))

    raws = [json.loads(b) for b in bodies]
    pushes = [validate(r) for r in raws]
    events = [to_xdm(p, settings) for p in pushes]
    return {
        "json_loads": timed(lambda i: json.loads(bodies[i])),
        "validate": timed(lambda i: validate(raws[i])),
        "to_xdm": timed(lambda i: to_xdm(pushes[i], settings)),
        "encode_and_check": timed(encode_and_check),
        "prepare_total": timed(lambda i: prepare(entries[i], settings)),
    }


def _redis_commands(bench: Bench, events: int) -> dict[str, Any]:
    """Redis calls per event and server time, from INFO commandstats since the last reset."""
    stats = bench.redis.info("commandstats")
    rows = []
    for name, row in stats.items():
        calls, usec = int(row["calls"]), int(row["usec"])
        rows.append((name.removeprefix("cmdstat_"), calls, usec))
    rows.sort(key=lambda r: -r[2])
    return {
        "calls_per_event": round(sum(r[1] for r in rows) / max(events, 1), 3),
        "server_us_per_event": round(sum(r[2] for r in rows) / max(events, 1), 1),
        "top": [
            {"command": name, "calls": calls, "usec": usec, "us_per_call": round(usec / max(calls, 1), 1)}
            for name, calls, usec in rows[:8]
        ],
    }


def _drain_until(
    bench: Bench, target: int, timeout: float, interval: float = 0.2
) -> tuple[list[tuple[float, int]], bool]:
    """Poll the sandbox until it accepted ``target`` events; (seconds, count) samples, and success."""
    t0 = time.monotonic()
    samples = [(0.0, 0)]
    while True:
        count = int(bench.sandbox_stats()["events"])
        samples.append((round(time.monotonic() - t0, 2), count))
        if count >= target:
            return samples, True
        if time.monotonic() - t0 > timeout:
            return samples, False
        time.sleep(interval)


def _steady_rate(samples: list[tuple[float, int]]) -> float:
    """Events per second from the first accepted event to the end: the drain without its start-up."""
    first = next(((t, c) for t, c in samples if c > 0), None)
    last = samples[-1]
    if first is None or last[0] <= first[0]:
        return float("nan")
    return round((last[1] - first[1]) / (last[0] - first[0]), 1)


def _drain_meter(bench: Bench, worker: Process) -> tuple[list[int], CpuMeter]:
    """The worker's pool processes, and a started CPU meter over everything a drain uses."""
    pool = children(worker.proc.pid)
    meter = CpuMeter(
        {
            "worker main": [worker.proc.pid],
            "worker pool": pool,
            "redis-server": [bench.redis_pid],
            "sandbox": [bench.sandbox_pid],
            "bench (polling)": [os.getpid()],
        }
    )
    bench.redis.config_resetstat()
    meter.start()
    return pool, meter


def section_drain(bench: Bench) -> dict[str, Any]:
    """N queued pushes through the stream design, then through one Celery task per push."""
    n = bench.plan.drain_n
    env = bench.env()
    out: dict[str, Any] = {"n": n, "prepare_us": measure_prepare(bench)}

    # The stream design: the backlog sits in the inbox; time from the worker being ready.
    bench.fresh()
    t = time.monotonic()
    out["push_json_bytes"] = round(bench.fill_inbox(n, "drain"), 1)
    out["fill_xadd_per_s"] = round(n / (time.monotonic() - t))
    with bench.tracker.scope():
        work = bench.work / "drain"
        work.mkdir(exist_ok=True)
        worker = celery_worker(env, bench.log("drain-worker.log"), name="drain")
        bench.tracker.add("drain worker", worker.stop)
        wait_ready(worker, "drain worker")
        pool, meter = _drain_meter(bench, worker)
        bench.profiler.attach("drain-pool", pool)
        bench.profiler.attach("drain-main", [worker.proc.pid])
        bench.profiler.attach("drain-sandbox", [bench.sandbox_pid])
        samples, ok = _drain_until(bench, n, timeout=60 + n / 500)
        cpu = meter.stop()
        profile = bench.profiler.collect()
        commands = _redis_commands(bench, n)
    elapsed, done = samples[-1]
    out["design"] = {
        "seconds": elapsed,
        "events": done,
        "events_per_s": round(done / elapsed, 1),
        "steady_events_per_s": _steady_rate(samples),
        "completed": ok,
        "cpu": cpu,
        "redis": commands,
        "samples": samples,
        "profile": profile,
    }
    print(f"  drain: stream design {done / elapsed:,.0f} events/s ({done:,} in {elapsed:.1f} s)", flush=True)

    # One task per push: the backlog is N Celery messages, published the way a receiver would.
    out["naive"] = _drain_naive(bench, env, n)
    naive_rate = out["naive"]["events_per_s"]
    out["gain"] = out["design"]["events_per_s"] / naive_rate if naive_rate else float("nan")
    return out


def _drain_naive(bench: Bench, env: dict[str, str], n: int) -> dict[str, Any]:
    bench.fresh()
    before = int(bench.redis.info("memory")["used_memory"])
    publish = subprocess.run(
        [sys.executable, "-m", "devkit.bench", "_publish", str(n), bench.run_id],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    published = json.loads(publish.stdout.strip().splitlines()[-1])
    queued_bytes = (int(bench.redis.info("memory")["used_memory"]) - before) / n
    with bench.tracker.scope():
        worker = naive_worker(env, bench.log("naive-worker.log"))
        bench.tracker.add("naive worker", worker.stop)
        wait_ready(worker, "one-task-per-push worker")
        pool, meter = _drain_meter(bench, worker)
        bench.profiler.attach("naive-pool", pool)
        bench.profiler.attach("naive-main", [worker.proc.pid])
        samples, ok = _drain_until(bench, n, timeout=60 + n / 100)
        cpu = meter.stop()
        profile = bench.profiler.collect()
        commands = _redis_commands(bench, n)
    elapsed, done = samples[-1]
    print(
        f"  drain: one task per push {done / elapsed:,.0f} events/s ({done:,} in {elapsed:.1f} s)", flush=True
    )
    return {
        "seconds": elapsed,
        "events": done,
        "events_per_s": round(done / elapsed, 1),
        "steady_events_per_s": _steady_rate(samples),
        "completed": ok,
        "publish": published,
        "redis_bytes_per_queued_task": round(queued_bytes, 1),
        "cpu": cpu,
        "redis": commands,
        "samples": samples,
        "profile": profile,
    }


def publish_main(n: int, run_id: str) -> int:
    """Entry point of the publisher process: N ``apply_async`` calls, as N receiver requests would make."""
    from devkit import bench_naive  # noqa: PLC0415 - reads the worker's settings from this environment

    sample = min(n, 1000)
    start = time.perf_counter()
    # The first ones as a receiver without tuning would: apply_async alone, a producer per call.
    for i in range(sample):
        bench_naive.deliver_one.apply_async((encode_push(sample_push(f"{run_id}-naive-{i:09d}")),))
    plain_us = (time.perf_counter() - start) / sample * 1e6
    start = time.perf_counter()
    # The rest through one producer, which is how a tuned receiver would publish.
    with bench_naive.app.producer_or_acquire() as producer:
        for i in range(sample, n):
            body = encode_push(sample_push(f"{run_id}-naive-{i:09d}"))
            bench_naive.deliver_one.apply_async((body,), producer=producer)
    pooled_us = (time.perf_counter() - start) / max(n - sample, 1) * 1e6
    print(
        json.dumps(
            {"apply_async_us": round(plain_us, 1), "apply_async_shared_producer_us": round(pooled_us, 1)}
        )
    )
    return 0


def section_end_to_end(bench: Bench, trickle: bool) -> dict[str, Any]:
    """Sustained load through the receiver with everything running; then, optionally, a trickle."""
    plan = bench.plan
    env = bench.env()
    settings = bench.settings()
    out: dict[str, Any] = {"offered_rate": plan.rate, "seconds": plan.sustained_seconds}
    bench.fresh()
    with bench.tracker.scope():
        work = bench.work / "e2e"
        work.mkdir(exist_ok=True)
        port = free_port()
        receiver = gunicorn_app(env, "receiver.app:create_app()", port, bench.log("e2e-gunicorn.log"))
        bench.tracker.add("e2e gunicorn", receiver.stop)
        worker = celery_worker(env, bench.log("e2e-worker.log"), name="e2e")
        bench.tracker.add("e2e worker", worker.stop)
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: bench.http.get(f"{base}/healthz", timeout=1).ok, timeout=30, what="e2e gunicorn")
        wait_ready(worker, "e2e worker")
        time.sleep(2)  # let the ticks start, as in a pipeline that has been up for a while
        meter = CpuMeter(
            {
                "receiver (gunicorn)": [receiver.proc.pid, *children(receiver.proc.pid)],
                "worker main": [worker.proc.pid],
                "worker pool": children(worker.proc.pid),
                "redis-server": [bench.redis_pid],
                "sandbox": [bench.sandbox_pid],
                "bench (sampling)": [os.getpid()],
            }
        )
        out["sustained"] = _sustained(bench, f"{base}/v1/pushes", meter)
        if trickle:
            out["trickle"] = _trickle(bench, f"{base}/v1/pushes", settings)
    return out


def _take_output(out_path: Path) -> dict[str, Any]:
    """The load generator's output; its files are removed (a long run's records are megabytes)."""
    output: dict[str, Any] = json.loads(out_path.read_text())
    out_path.unlink()
    out_path.with_name(out_path.name.replace(".out.json", ".json")).unlink(missing_ok=True)
    return output


def _load_in_background(bench: Bench, spec: dict[str, Any], tag: str) -> tuple[Process, Path]:
    head, tail = push_template()
    tid_prefix = f"{bench.run_id}-{tag}"
    spec = {**spec, "token": TOKEN, "head": head, "tail": tail, "tid_prefix": tid_prefix}
    spec_path, out_path = bench.work / f"loadgen-{tag}.json", bench.work / f"loadgen-{tag}.out.json"
    spec_path.write_text(json.dumps(spec))
    args = [sys.executable, "-m", "devkit.bench", "_loadgen", str(spec_path), str(out_path)]
    proc = Process(args, dict(os.environ), bench.log(f"loadgen-{tag}.log"))
    bench.tracker.add(f"load generator {tag}", proc.stop)
    return proc, out_path


def _latencies(records: list[list[Any]], events: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    """Delivery latency of every acknowledged push: sandbox receivedTimeMs minus the client's 202 time."""
    received = {e["transmissionId"]: int(e["receivedTimeMs"]) for e in events if e.get("transmissionId")}
    acked = [r for r in records if 200 <= r[4] < 300]
    lat = []
    missing = 0
    for r in acked:
        got = received.get(f"{prefix}-{r[0]:08d}")
        if got is None:
            missing += 1
        else:
            lat.append((got - r[3] * 1000) / 1000)
    return {
        "acked": len(acked),
        "delivered": len(lat),
        "undelivered": missing,
        "p50_s": round(pct(lat, 50), 3),
        "p90_s": round(pct(lat, 90), 3),
        "p99_s": round(pct(lat, 99), 3),
        "max_s": round(max(lat), 3) if lat else float("nan"),
        "cdf": [round(pct(lat, q), 3) for q in range(101)] if lat else [],
    }


def _sustained(bench: Bench, url: str, meter: CpuMeter) -> dict[str, Any]:
    plan = bench.plan
    start_depth = sum(bench.depth())
    events_before = int(bench.sandbox_stats()["events"])
    requests_before = int(bench.sandbox_stats()["requests"])
    spec = {"url": url, "mode": "open", "rate": plan.rate, "duration": plan.sustained_seconds}
    proc, out_path = _load_in_background(bench, spec, "sustained")
    t0_wall, t0 = time.time(), time.monotonic()
    meter.start()
    series: list[dict[str, Any]] = []
    while proc.alive() and time.monotonic() - t0 < plan.sustained_seconds + 120:
        inbox, outbox = bench.depth()
        delivered = int(bench.sandbox_stats()["events"]) - events_before
        series.append(
            {"t": round(time.monotonic() - t0, 2), "inbox": inbox, "outbox": outbox, "delivered": delivered}
        )
        time.sleep(1.0)
    cpu = meter.stop()
    end_depth = sum(bench.depth())
    proc.stop()
    output = _take_output(out_path)
    records: list[list[Any]] = output["records"]
    cpu["cpu_s"]["load generator"] = output["cpu_s"]
    cpu["share_of_machine"]["load generator"] = round(
        output["cpu_s"] / (cpu["wall_s"] * (os.cpu_count() or 1)), 3
    )
    acked = sum(1 for r in records if 200 <= r[4] < 300)
    # Everything acknowledged must still arrive; give the pipeline time to finish.
    flushed_at = time.monotonic()
    wait_for(
        lambda: int(bench.sandbox_stats()["events"]) - events_before >= acked,
        timeout=120,
        interval=0.5,
        what="the sustained run's pushes to be delivered",
    )
    drain_after_s = round(time.monotonic() - flushed_at, 2)
    events = bench.sandbox_records("events", since=events_before)
    reqs = bench.sandbox_records("requests", since=requests_before)
    # From the first request's scheduled time: the generator's own start-up is not the pipeline's.
    load_start, load_end = min(r[1] for r in records), max(r[3] for r in records)
    window = load_end - load_start
    # Delivered rate in the steady part: from a little after the start (nothing can arrive at AEP
    # in the first tick) to the last acknowledgement, so neither end's lag counts as slowness.
    steady_from = load_start + min(2.0, window / 3)
    delivered_steady = sum(1 for e in events if steady_from * 1000 <= e["receivedTimeMs"] <= load_end * 1000)
    batch_sizes = [int(r["messages"]) for r in reqs if "/collection/batch/" in r["path"]]
    # Backlog trend: least-squares slope over the run after its first few seconds.
    steady = [s for s in series if s["t"] >= min(5.0, plan.sustained_seconds / 3)]
    slope = _slope([(s["t"], s["inbox"] + s["outbox"]) for s in steady])
    sends_late = sum(1 for r in records if r[2] - r[1] > 0.1)
    ack_lat = [(r[3] - r[2]) * 1000 for r in records if 200 <= r[4] < 300]
    result = {
        "sent": len(records),
        "acked": acked,
        "non2xx": sum(1 for r in records if not 200 <= r[4] < 300),
        "sends_late_over_100ms": sends_late,
        "acked_per_s": round(acked / window, 1),
        "delivered_per_s": round(delivered_steady / (load_end - steady_from), 1),
        "backlog_start": start_depth,
        "backlog_end": end_depth,
        "backlog_max": max((s["inbox"] + s["outbox"] for s in series), default=0),
        "backlog_slope_per_s": round(slope, 2),
        "drain_after_load_s": drain_after_s,
        "receiver_p50_ms": round(pct(ack_lat, 50), 2),
        "receiver_p99_ms": round(pct(ack_lat, 99), 2),
        "latency": _latencies(records, events, f"{bench.run_id}-sustained"),
        "aep_requests": len(batch_sizes),
        "aep_events": sum(batch_sizes),
        "requests_per_1000_events": round(1000 * len(batch_sizes) / max(sum(batch_sizes), 1), 2),
        "batch_size_histogram": sorted(Counter(batch_sizes).items()),
        "cpu": cpu,
        "series": series,
        "acked_per_second": _per_second([r[3] for r in records if 200 <= r[4] < 300], t0_wall),
        "delivered_per_second": _per_second([e["receivedTimeMs"] / 1000 for e in events], t0_wall),
    }
    lat = result["latency"]
    print(
        f"  sustained: offered {plan.rate}/s, acked {result['acked_per_s']:,.0f}/s, delivered"
        f" {result['delivered_per_s']:,.0f}/s, backlog {start_depth} -> {end_depth},"
        f" latency p50 {lat['p50_s']:.2f} s p99 {lat['p99_s']:.2f} s",
        flush=True,
    )
    return result


def _per_second(times: list[float], t0: float) -> list[tuple[int, int]]:
    counts = Counter(int(t - t0) for t in times)
    return sorted(counts.items())


def _slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return float("nan")
    mx = statistics.fmean(p[0] for p in points)
    my = statistics.fmean(p[1] for p in points)
    den = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / den if den else float("nan")


def _trickle(bench: Bench, url: str, settings: Settings) -> dict[str, Any]:
    plan = bench.plan
    time.sleep(2)
    events_before = int(bench.sandbox_stats()["events"])
    requests_before = int(bench.sandbox_stats()["requests"])
    spec = {"url": url, "mode": "open", "rate": 1, "duration": plan.trickle_seconds}
    proc, out_path = _load_in_background(bench, spec, "trickle")
    wait_for(lambda: not proc.alive(), timeout=plan.trickle_seconds + 60, interval=0.5, what="trickle load")
    proc.stop()
    records: list[list[Any]] = _take_output(out_path)["records"]
    acked = sum(1 for r in records if 200 <= r[4] < 300)
    wait_for(
        lambda: int(bench.sandbox_stats()["events"]) - events_before >= acked,
        timeout=30,
        interval=0.2,
        what="the trickle to be delivered",
    )
    events = bench.sandbox_records("events", since=events_before)
    reqs = bench.sandbox_records("requests", since=requests_before)
    result: dict[str, Any] = {
        "rate": 1,
        "seconds": plan.trickle_seconds,
        "batch_max_wait_ms": settings.aep_batch_max_wait_ms,
        "latency": _latencies(records, events, f"{bench.run_id}-trickle"),
        "aep_requests": len(reqs),
    }
    lat = result["latency"]
    print(f"  trickle: latency p50 {lat['p50_s']:.2f} s p99 {lat['p99_s']:.2f} s", flush=True)
    return result


def section_memory(bench: Bench) -> dict[str, Any]:
    """Redis bytes per queued push, then worker RSS over a long drain."""
    plan = bench.plan
    bench.fresh()
    client = bench.redis
    with contextlib.suppress(redis.ResponseError):  # only jemalloc builds have it
        client.memory_purge()
    before = int(client.info("memory")["used_memory"])
    json_bytes = bench.fill_inbox(plan.memory_queue_n, "mem-0")
    after = int(client.info("memory")["used_memory"])
    usage = int(client.memory_usage(keys.INBOX, samples=0) or 0)
    per_push = (after - before) / plan.memory_queue_n
    out: dict[str, Any] = {
        "queued": plan.memory_queue_n,
        "push_json_bytes": round(json_bytes, 1),
        "redis_bytes_per_push_used_memory": round(per_push, 1),
        "redis_bytes_per_push_memory_usage": round(usage / plan.memory_queue_n, 1),
        "ratio": per_push / json_bytes,
    }
    out.update(_long_drain(bench))
    used_end = int(client.info("memory")["used_memory"])
    # The streams are empty again: what is left is mostly one dedupe key per event.
    out["dedupe_bytes_per_event"] = round((used_end - before) / max(out["drained"], 1), 1)
    out["deadletters"] = int(client.xlen(keys.DEADLETTER))
    print(
        f"  memory: Redis {per_push:.0f} B per queued push ({json_bytes:.0f} B of JSON);"
        f" worker RSS {out['rss_start_total'] / 2**20:.0f} -> {out['rss_end_total'] / 2**20:.0f} MB",
        flush=True,
    )
    return out


def _long_drain(bench: Bench) -> dict[str, Any]:
    """Drain ``memory_drain_n`` events with one worker, the inbox kept topped up; its RSS over time."""
    plan = bench.plan
    target, chunk = plan.memory_drain_n, max(1, plan.memory_queue_n // 2)
    out: dict[str, Any] = {}
    with bench.tracker.scope():
        work = bench.work / "memory"
        work.mkdir(exist_ok=True)
        worker = celery_worker(bench.env(), bench.log("memory-worker.log"), name="memory")
        bench.tracker.add("memory worker", worker.stop)
        wait_ready(worker, "memory worker")
        pids = [worker.proc.pid, *children(worker.proc.pid)]

        def rss() -> dict[str, int]:
            return {str(p): rss_bytes(p) for p in pids}

        start_rss, warm = rss(), None
        fed, t0 = plan.memory_queue_n, time.monotonic()
        series: list[dict[str, Any]] = []
        resets = 0
        while True:
            inbox, outbox = bench.depth()
            processed = fed - inbox - outbox
            if fed < target and inbox < chunk:
                # Topped up as it drains: the whole million is never queued at once.
                size = min(chunk, target - fed)
                bench.fill_inbox(size, f"mem-{fed}")
                fed += size
            now_rss = rss()
            series.append(
                {"t": round(time.monotonic() - t0, 1), "processed": processed, "rss": sum(now_rss.values())}
            )
            if warm is None and processed >= target // 10:
                warm = now_rss
            if int(bench.sandbox_stats()["events"]) > 200_000:
                # The sandbox keeps a record per event; its memory is not what is measured here.
                bench.http.post(f"{bench.sandbox_url}/sandbox/reset", timeout=10).raise_for_status()
                resets += 1
            if fed >= target and inbox == 0 and outbox == 0:
                break
            if time.monotonic() - t0 > 120 + target / 500:
                out["timed_out"] = True
                break
            time.sleep(2.0)
        end_rss = rss()
        elapsed = time.monotonic() - t0
    drained = fed - sum(bench.depth())
    start_total, end_total = sum(start_rss.values()), sum(end_rss.values())
    warm_total = sum((warm or start_rss).values())
    out.update(
        drained=drained,
        drain_seconds=round(elapsed, 1),
        events_per_s=round(drained / elapsed, 1),
        rss_start=start_rss,
        rss_warm=warm,
        rss_end=end_rss,
        rss_start_total=start_total,
        rss_end_total=end_total,
        rss_growth=(end_total - start_total) / start_total,
        rss_growth_after_warmup=(end_total - warm_total) / warm_total,
        sandbox_resets=resets,
        series=series,
    )
    return out


# --- profiles -----------------------------------------------------------------------------------


_SITE = re.compile(r"/site-packages/([^/]+)/")
_STDLIB = re.compile(r"/lib/python3\.\d+/([^/]+?)(?:\.py|/)")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _package(path: str) -> str:
    """A frame's file as a short owner name: a library, the stdlib module, or a project module."""
    if path.startswith(str(ROOT) + "/") and "/.venv/" not in path:
        return path[len(str(ROOT)) + 1 :].removesuffix(".py").replace("/", ".")
    if m := _SITE.search(path):
        return m.group(1)
    if m := _STDLIB.search(path):
        return f"stdlib {m.group(1)}"
    return path.rsplit("/", 1)[-1]


def summarize_profile(paths: list[Path], seconds: float) -> dict[str, Any]:
    """Where py-spy's samples (on-CPU only) went: by owner of the leaf frame, by function, inclusive."""
    self_fn: Counter[str] = Counter()
    self_pkg: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    total = 0
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            total += count
            names = []
            for frame in stack.split(";"):
                m = _FRAME.match(frame)
                func, file = (m.group("func"), m.group("file")) if m else (frame, "")
                names.append((f"{func} [{_package(file)}]", _package(file), file))
            leaf = names[-1]
            self_fn[leaf[0]] += count
            self_pkg[leaf[1]] += count
            for name in {n[0] for n in names if n[2].startswith(str(ROOT) + "/") and "/.venv/" not in n[2]}:
                incl_fn[name] += count

    def share(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(name, round(100 * c / max(total, 1), 1)) for name, c in counter.most_common(n)]

    processes = len(paths)
    return {
        "files": [str(p) for p in paths],
        "samples": total,
        # py-spy samples threads that are running or waiting for a CPU (state R), at 100 Hz: on a busy
        # machine this is more than the CPU time the process got; the CPU meters give that.
        # ``seconds`` is summed over the recorders, so the mean per process is seconds / processes.
        "active_cores": round(total * processes / max(seconds * 100, 1), 2),
        "by_owner": share(self_pkg, 12),
        "top_self": share(self_fn, 15),
        "project_inclusive": share(incl_fn, 15),
    }


# --- results: targets, table, chart -----------------------------------------------------------


@dataclasses.dataclass
class Row:
    """One line of the table."""

    section: str
    measure: str
    value: str
    target: str = ""
    met: bool | None = None


def _n(x: float, digits: int = 0) -> str:
    return "n/a" if x != x else f"{x:,.{digits}f}"  # noqa: PLR0124 - NaN is the only value unequal to itself


def rows_for(results: dict[str, Any]) -> list[Row]:
    """The table: every measurement, each target with met or not."""
    s = results["sections"]
    rows: list[Row] = []
    builders: list[tuple[str, str, Callable[[dict[str, Any], list[Row]], None]]] = [
        ("receiver", "receiver", _receiver_rows),
        ("drain", "drain", _drain_rows),
        ("e2e", "sustained", lambda e, out: _e2e_rows(e, out, "batching" in results["plan"]["sections"])),
        ("memory", "memory", _memory_rows),
        ("scrape", "scrape", _scrape_rows),
    ]
    for key, label, build in builders:
        if key not in s:
            continue
        if "error" in s[key]:
            rows.append(Row(label, "failed", s[key]["error"][:100], met=False))
        else:
            build(s[key], rows)
    loads = " · ".join(f"{name} {v['loadavg'][0]:.1f}" for name, v in s.items() if "loadavg" in v)
    rows.append(Row("machine", "load average (1 min) at section start", loads))
    return rows


def _receiver_rows(r: dict[str, Any], rows: list[Row]) -> None:
    for name in ("baseline", "xadd", "xadd_sync", "receiver"):
        if name not in r:
            continue  # results from before the parse + XADD floor was measured
        a = r[name]
        counted = f"{r['load_generator']}, {r['connections']} conns, median of {a['rounds_counted']}"
        if a["rounds_flagged"]:
            counted += f", {a['rounds_flagged']} flagged"
        value = f"{_n(a['rps'])} · {_n(a['p50_ms'], 1)} · {_n(a['p99_ms'], 1)} ms"
        label = {"xadd": "parse + XADD", "xadd_sync": "parse + XADD on sync workers"}.get(name, name)
        rows.append(Row("receiver", f"{label}: req/s · p50 · p99 ({counted})", value))
    value = f"{_n(r['baseline']['cpu_us_per_request'])} / {_n(r['receiver']['cpu_us_per_request'])}"
    rows.append(Row("receiver", "gunicorn CPU per request, baseline / receiver (us)", value))
    if "xadd" in r:
        value = f"{r['xadd_rps_ratio']:.0%} / {r['rps_ratio_to_xadd']:.0%}"
        rows.append(Row("receiver", "parse + XADD / baseline req/s; receiver / parse + XADD", value))
    if "p99_ratio_to_xadd" in r:
        rps_x, p99_x = r["rps_ratio_to_xadd"], r["p99_ratio_to_xadd"]
        rows.append(Row("receiver", "receiver / parse + XADD req/s", f"{rps_x:.0%}", ">= 95%", rps_x >= 0.95))
        rows.append(Row("receiver", "receiver / parse + XADD p99", f"{p99_x:.2f}x", "<= 1.2x", p99_x <= 1.2))
    rps, p99 = r["rps_ratio"], r["p99_ratio"]
    rows.append(Row("receiver", "receiver / baseline req/s", f"{rps:.0%}", ">= 85%", rps >= 0.85))
    rows.append(Row("receiver", "receiver / baseline p99", f"{p99:.2f}x", "<= 1.5x", p99 <= 1.5))
    bad = r["receiver"]["non2xx"] + r["receiver"]["socket_errors"]
    rows.append(Row("receiver", "receiver non-2xx + socket errors", f"{bad}", "0", bad == 0))


def _drain_rows(d: dict[str, Any], rows: list[Row]) -> None:
    de, na = d["design"], d["naive"]
    ok = de["completed"] and de["events_per_s"] >= 3000
    value = f"{_n(de['events_per_s'])} ev/s ({de['events']:,} in {de['seconds']:.1f} s;"
    value += f" {_n(de['steady_events_per_s'])}/s after the first)"
    rows.append(Row("drain", "streams: 1 worker, 2 processes", value, ">= 3,000 ev/s", ok))
    value = f"{_n(na['events_per_s'])} ev/s ({na['events']:,} in {na['seconds']:.1f} s;"
    value += f" {_n(na['steady_events_per_s'])}/s after the first)"
    rows.append(Row("drain", "one Celery task per push", value))
    value = f"{na['publish']['apply_async_us']:.0f} us per apply_async"
    value += f", {na['redis_bytes_per_queued_task']:,.0f} B"
    rows.append(Row("drain", "one task per push: publish cost, Redis per queued task", value))
    rows.append(Row("drain", "gain over one task per push", f"{d['gain']:.1f}x", ">= 4x", d["gain"] >= 4))
    p = d["prepare_us"]
    value = (
        f"{p['prepare_total']:.0f} (loads {p['json_loads']:.0f}, validate {p['validate']:.0f},"
        f" xdm {p['to_xdm']:.0f}, encode {p['encode_and_check']:.0f})"
    )
    rows.append(Row("drain", "ingest CPU per push in one process (us)", value))
    cores = de["cpu"]["cpu_s"]
    used = {name: sec / de["seconds"] for name, sec in cores.items()}
    value = ", ".join(f"{name} {c:.2f}" for name, c in used.items() if c >= 0.02)
    rows.append(Row("drain", "streams: CPU cores used, by process", value))
    value = f"{de['redis']['calls_per_event']:.2f} / {na['redis']['calls_per_event']:.2f}"
    rows.append(Row("drain", "Redis calls per event (streams / per push)", value))


def _e2e_rows(e: dict[str, Any], rows: list[Row], batching: bool) -> None:
    u, rate = e["sustained"], e["offered_rate"]
    value = f"{rate:,} · {_n(u['acked_per_s'])} · {_n(u['delivered_per_s'])}"
    ok = u["delivered_per_s"] >= 0.98 * rate and u["non2xx"] == 0
    rows.append(
        Row("sustained", f"offered · acked · delivered /s ({e['seconds']:.0f} s)", value, "= offered", ok)
    )
    # "Does not grow": at most two seconds of traffic waiting at the end, and no upward trend.
    steady = u["backlog_end"] <= 2 * rate and u["backlog_slope_per_s"] <= 0.02 * rate
    value = (
        f"{u['backlog_start']:,} -> {u['backlog_end']:,} (max {u['backlog_max']:,}),"
        f" {u['backlog_slope_per_s']:+.1f}/s"
    )
    rows.append(Row("sustained", "backlog start -> end, trend", value, "does not grow", steady))
    lat = u["latency"]
    value = f"{lat['p50_s']:.2f} · {lat['p99_s']:.2f} s ({lat['undelivered']} undelivered)"
    rows.append(Row("sustained", "delivery latency p50 · p99 (202 -> AEP)", value))
    value = (
        f"{u['receiver_p50_ms']:.1f} · {u['receiver_p99_ms']:.1f} ms ({u['sends_late_over_100ms']} sent late)"
    )
    rows.append(Row("sustained", "receiver p50 · p99 under load", value))
    if batching:
        per = u["requests_per_1000_events"]
        rows.append(Row("batching", "AEP requests per 1,000 events (load)", f"{per:.2f}", "<= 6", per <= 6))
    if t := e.get("trickle"):
        limit = (t["batch_max_wait_ms"] + 500) / 1000
        tl = t["latency"]
        ok = tl["p99_s"] <= limit and tl["undelivered"] == 0
        value = f"{tl['p50_s']:.2f} · {tl['p99_s']:.2f} s"
        rows.append(Row("batching", "trickle (1/s) latency p50 · p99", value, f"p99 <= {limit:.2f} s", ok))


def section_scrape(bench: Bench, letters: int = 100_000, scrapes: int = 20) -> dict[str, Any]:
    """What one /metrics scrape costs with no dead letters and with ``letters`` of them."""
    from shared import deadletter, metrics  # noqa: PLC0415 - the bench's other sections need neither

    def per_scrape_ms() -> float:
        started = time.perf_counter()
        for _ in range(scrapes):
            metrics.render(bench.redis)
        return round((time.perf_counter() - started) / scrapes * 1000, 2)

    bench.fresh()
    empty_ms = per_scrape_ms()
    body = json.dumps(sample_push())
    letter = LetterRecord("invalid_payload", "{}", body, "", "", "", 0, 0).fields()
    for start in range(0, letters, 5000):
        with bench.redis.pipeline(transaction=False) as pipe:
            for _ in range(start, min(letters, start + 5000)):
                pipe.xadd(keys.DEADLETTER, letter)
            pipe.execute()
    deadletter.reconcile_counts(bench.redis)  # as housekeeping does for letters it did not count
    full_ms = per_scrape_ms()
    print(f"  scrape: {empty_ms:.2f} ms with no dead letters, {full_ms:.2f} ms with {letters:,}", flush=True)
    return {"letters": letters, "empty_ms": empty_ms, "full_ms": full_ms}


def _scrape_rows(m: dict[str, Any], rows: list[Row]) -> None:
    value = f"{m['empty_ms']:.2f} ms / {m['full_ms']:.2f} ms"
    ok = m["full_ms"] <= 2 * m["empty_ms"] + 1
    rows.append(Row("scrape", f"/metrics, 0 / {m['letters']:,} dead letters", value, "about equal", ok))


def _memory_rows(m: dict[str, Any], rows: list[Row]) -> None:
    per, size = m["redis_bytes_per_push_used_memory"], m["push_json_bytes"]
    value = f"{per:.0f} B vs {size:.0f} B ({m['ratio']:.2f}x)"
    rows.append(Row("memory", "Redis per queued push vs its JSON", value, "<= 1.5x", m["ratio"] <= 1.5))
    value = (
        f"{m['rss_start_total'] / 2**20:.0f} -> {m['rss_end_total'] / 2**20:.0f} MB"
        f" ({m['rss_growth']:+.1%}; {m['rss_growth_after_warmup']:+.1%} after warm-up)"
    )
    ok = m["rss_growth"] < 0.10 and not m.get("timed_out")
    rows.append(Row("memory", f"worker RSS, start -> after {m['drained']:,} events", value, "< 10%", ok))
    value = f"{m['dedupe_bytes_per_event']:.0f} B"
    rows.append(Row("memory", "Redis per delivered event (dedupe key, 7 days)", value))


def print_table(rows: list[Row], header: str) -> None:
    """The one table, plain text."""
    cols = ("section", "measure", "value", "target", "")
    cells = [
        (r.section, r.measure, r.value, r.target, "" if r.met is None else ("met" if r.met else "NOT MET"))
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [cols, *cells]) for i in range(len(cols))]
    print()
    print(header)
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    print(line.rstrip())
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)).rstrip())


def print_profiles(results: dict[str, Any]) -> None:
    """The hot spots of every profiled process, after the table."""
    found = []
    for section in results["sections"].values():
        if not isinstance(section, dict):
            continue
        for part in (section, section.get("design"), section.get("naive")):
            if isinstance(part, dict) and part.get("profile"):
                found.extend(part["profile"].items())
    for role, prof in found:
        active = f"{prof['active_cores']:.2f} cores running or runnable"
        print(f"\nprofile {role}: {prof['samples']} samples, {active}")
        print("  by owner (self): " + ", ".join(f"{n} {p}%" for n, p in prof["by_owner"][:8]))
        print("  top functions (self):")
        for name, p in prof["top_self"][:8]:
            print(f"    {p:5.1f}%  {name}")
        if prof["project_inclusive"]:
            print("  project functions (inclusive):")
            for name, p in prof["project_inclusive"][:8]:
                print(f"    {p:5.1f}%  {name}")


def draw_chart(results: dict[str, Any], path: Path) -> None:
    """Latency distributions and throughput over time, one PNG."""
    import matplotlib  # noqa: PLC0415 - optional dependency (the bench extra), loaded only here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    s = results["sections"]
    fig, axes = plt.subplots(3, 2, figsize=(14, 13))
    fig.suptitle(f"rainbridge benchmark {results['meta']['started']} ({results['meta']['mode']})")
    (ax_recv, ax_lat), (ax_drain, ax_sus), (ax_mem, ax_batch) = axes
    panels: list[tuple[str, Any, Callable[[Any, dict[str, Any]], None], str]] = [
        ("receiver", ax_recv, _plot_receiver, "receiver vs baseline"),
        ("e2e", ax_lat, _plot_latency, "delivery latency"),
        ("drain", ax_drain, _plot_drain, "drain"),
        ("e2e", ax_sus, _plot_sustained, "sustained"),
        ("memory", ax_mem, _plot_memory, "memory"),
        ("e2e", ax_batch, _plot_batches, "batching"),
    ]
    for key, ax, plot, title in panels:
        if key in s and "error" not in s[key]:
            plot(ax, s[key])
        else:
            ax.set_title(title)
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_receiver(ax: Any, r: dict[str, Any]) -> None:
    names: list[str] = []
    for name, color in (("baseline", "tab:gray"), ("xadd", "tab:orange"), ("receiver", "tab:blue")):
        for rnd in (x for x in r["rounds"] if x["app"] == name and not x["flagged"]):
            qs = list(rnd["percentiles_ms"].items())
            names = [f"p{q}" for q, _ in qs]
            label = f"{name} round {rnd['round']} ({rnd['rps']:,.0f} req/s)"
            ax.plot(range(len(qs)), [v for _, v in qs], marker="o", color=color, alpha=0.7, label=label)
    ax.set_xticks(range(len(names)), names)
    ax.set(title="receiver vs baseline: response latency percentiles", ylabel="ms")
    ax.legend(fontsize=7)


def _plot_latency(ax: Any, e: dict[str, Any]) -> None:
    for name, lat in (
        ("sustained", e["sustained"]["latency"]),
        ("trickle 1/s", e.get("trickle", {}).get("latency")),
    ):
        if lat and lat["cdf"]:
            share = [q / 100 for q in range(len(lat["cdf"]))]
            label = f"{name}: p50 {lat['p50_s']:.2f} s, p99 {lat['p99_s']:.2f} s"
            ax.step(lat["cdf"], share, where="post", label=label)
    if "trickle" in e:
        limit = (e["trickle"]["batch_max_wait_ms"] + 500) / 1000
        ax.axvline(limit, color="red", ls="--", label="trickle p99 target")
    ax.set(title="delivery latency (202 -> accepted by AEP), CDF", xlabel="seconds", ylabel="share")
    ax.legend(fontsize=8)


def _every(samples: list[tuple[float, int]], seconds: float) -> list[tuple[float, int]]:
    """The samples at least ``seconds`` apart (and the last), so rates between them are not all noise."""
    kept: list[tuple[float, int]] = []
    for sample in samples:
        if not kept or sample[0] - kept[-1][0] >= seconds:
            kept.append(sample)
    if samples and kept[-1] != samples[-1]:
        kept.append(samples[-1])
    return kept


def _plot_drain(ax: Any, d: dict[str, Any]) -> None:
    for name, part in (("streams", d["design"]), ("one task per push", d["naive"])):
        pts = rates(_every([(float(t), int(c)) for t, c in part["samples"]], 1.0))
        if pts:
            ax.plot(*zip(*pts, strict=True), label=f"{name}: {part['events_per_s']:,.0f} ev/s")
    title = f"drain of {d['n']:,} queued pushes: throughput over time"
    ax.set(title=title, xlabel="seconds", ylabel="events/s")
    ax.legend(fontsize=8)


def _plot_sustained(ax: Any, e: dict[str, Any]) -> None:
    sus = e["sustained"]
    for key, label in (("acked_per_second", "acknowledged/s"), ("delivered_per_second", "delivered/s")):
        if sus[key]:
            ax.plot(*zip(*sus[key], strict=True), label=label)
    ax.axhline(e["offered_rate"], color="gray", ls=":", label="offered")
    twin = ax.twinx()
    backlog = [x["inbox"] + x["outbox"] for x in sus["series"]]
    twin.plot(
        [x["t"] for x in sus["series"]], backlog, color="tab:red", alpha=0.6, label="backlog (inbox+outbox)"
    )
    twin.set_ylabel("backlog")
    ax.set(title="sustained: throughput over time", xlabel="seconds", ylabel="events/s")
    ax.legend(loc="lower left", fontsize=8)
    twin.legend(loc="lower right", fontsize=8)


def _plot_memory(ax: Any, m: dict[str, Any]) -> None:
    ax.plot([x["processed"] for x in m["series"]], [x["rss"] / 2**20 for x in m["series"]])
    ax.set(title="worker RSS (main + pool) over a long drain", xlabel="events drained", ylabel="MB")
    ax.set_ylim(bottom=0)


def _plot_batches(ax: Any, e: dict[str, Any]) -> None:
    sus = e["sustained"]
    if sus["batch_size_histogram"]:
        xs, cs = zip(*sus["batch_size_histogram"], strict=True)
        ax.bar(xs, cs, width=3)
    per = sus["requests_per_1000_events"]
    ax.set(
        title=f"messages per AEP request under load ({per:.2f} per 1,000 events)",
        xlabel="messages",
        ylabel="requests",
    )


# --- main ---------------------------------------------------------------------------------------


def run(plan: Plan, tracker: Tracker) -> dict[str, Any]:
    """Run the planned sections; a section that fails is recorded as failed and the rest still run."""
    plan.out.mkdir(parents=True, exist_ok=True)
    wrk = shutil.which("wrk")
    results: dict[str, Any] = {
        "meta": {
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "mode": "quick" if plan.quick else "full",
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "machine": platform.platform(),
            "wrk": bool(wrk),
        },
        "plan": {**dataclasses.asdict(plan), "out": str(plan.out)},
        "sections": {},
    }
    bench = Bench(plan, tracker)
    results["meta"]["logs"] = str(bench.log(""))
    bench.start()
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    if "receiver" in plan.sections:
        steps.append(("receiver", lambda: section_receiver(bench)))
    if "drain" in plan.sections:
        steps.append(("drain", lambda: section_drain(bench)))
    if "sustained" in plan.sections or "batching" in plan.sections:
        # Batching under load is read from the sustained run's requests: one run serves both.
        steps.append(("e2e", lambda: section_end_to_end(bench, trickle="batching" in plan.sections)))
    if "memory" in plan.sections:
        steps.append(("memory", lambda: section_memory(bench)))
    if "scrape" in plan.sections:
        steps.append(("scrape", lambda: section_scrape(bench)))
    for name, step in steps:
        load = loadavg()
        print(f"[{name}] load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
        started = time.monotonic()
        try:
            section = step()
        except Exception as exc:
            print(f"[{name}] failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            section = {"error": f"{type(exc).__name__}: {exc}"}
        section["loadavg"] = load
        section["wall_seconds"] = round(time.monotonic() - started, 1)
        results["sections"][name] = section
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table, write results.json and results.png."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_loadgen"]:
        return loadgen_main(argv[1], argv[2])
    if argv[:1] == ["_publish"]:
        return publish_main(int(argv[1]), argv[2])
    parser = argparse.ArgumentParser(prog="python -m devkit.bench", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a few minutes in all")
    parser.add_argument("--only", help=f"comma-separated sections: {','.join(SECTIONS)}")
    parser.add_argument("--out", default="bench", help="where results.json and results.png go")
    parser.add_argument("--profile", action="store_true", help="record py-spy profiles (drain, receiver)")
    parser.add_argument("--drain-n", type=int, help="pushes in the drain backlog")
    parser.add_argument("--rate", type=int, help="offered pushes per second in the sustained run")
    parser.add_argument("--duration", type=float, help="seconds of the sustained run")
    parser.add_argument("--memory-n", type=int, help="events drained in the memory section")
    parser.add_argument(
        "--load-generator",
        choices=("wrk", "python"),
        help="for the receiver section (default: wrk if installed)",
    )
    plan = Plan.build(parser.parse_args(argv))
    if plan.profile and not (shutil.which("py-spy") or (BIN / "py-spy").exists()):
        print("bench: --profile needs py-spy: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    # Also when started with SIGINT ignored (a background job of a script): Ctrl-C must clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tracker = Tracker()
    try:
        results = run(plan, tracker)
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping what it started", file=sys.stderr)
        return 130
    finally:
        # No second Ctrl-C may cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        tracker.unwind()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    rows = rows_for(results)
    results["table"] = [dataclasses.asdict(r) for r in rows]
    (plan.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    draw_chart(results, plan.out / "results.png")
    meta = results["meta"]
    print_table(rows, f"rainbridge benchmark, {meta['mode']}, {meta['cpus']} CPUs, {meta['started']}")
    if plan.profile:
        print_profiles(results)
    print(f"\nwrote {plan.out / 'results.json'} and {plan.out / 'results.png'}")
    print(f"process logs in {results['meta']['logs']}")
    # Unmet targets are the table's news, not a failure; a section that could not run is.
    return 1 if any("error" in v for v in results["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
