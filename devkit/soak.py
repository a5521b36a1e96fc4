"""``python -m devkit.soak``: the whole pipeline under steady load and random faults, then the verdict.

It starts, on 127.0.0.1 and under a fresh temp dir: a private redis-server (AOF ``everysec``,
``noeviction``), the AEP sandbox (in this process, bodies not stored), the receiver under gunicorn
(2 workers) and ``--workers`` Celery workers (2 pool processes each). It posts pushes
at ``--rate`` per second for ``--minutes`` (single pushes and arrays; about 1% invalid, 1% repeats of
a recent ``transmissionId`` under another ``eventType``) and, at random seeded intervals, injects a
fault:

* ``worker_kill``: SIGKILL of a worker's whole process group, then a restart (``w1`` is spared when
  there are two workers or more, so its memory over the run shows a leak);
* ``redis_restart``: ``SHUTDOWN`` (the AOF is flushed) and a restart a few seconds later;
* ``redis_kill``: SIGKILL and a restart; under ``appendfsync everysec`` Redis may lose up to about a
  second of writes by design, so missing pushes acknowledged shortly before it are counted apart;
* ``aep_throttle`` (429/503 with Retry-After), ``aep_500`` (a burst of 5xx), ``aep_reject``
  (``transmissionId``s refused by AEP: they must end as ``aep_rejected`` dead letters),
  ``token_expiry``, ``aep_outage`` (503s, or connection refused) and ``aep_slow`` (answers slower
  than the worker's timeout, so AEP may get a batch twice, under the same ``_id``s).

Each kind is injected once (in a seeded order) before kinds are drawn at random by weight.

Settings differ from the production defaults only where a soak needs quick recovery:
``PENDING_CLAIM_SECONDS=5`` (work a killed worker held is taken over after 5 s, not 30),
``DELIVERY_BACKOFF_CAP_SECONDS=10`` (not 120), ``AEP_TIMEOUT_SECONDS=5``; the sandbox's tokens live
300 s so renewals happen during the run.

A process that exits by itself (one not being killed by a fault) is restarted, as the restart policy
in docker-compose.yml would, and listed in the verdict with the last error in its log.

Then it stops posting, lifts the AEP faults (rejects stay), waits (bounded) for both streams to be
empty with nothing pending, and prints the ledger verdict. The exit status is 1 when a push is
missing (beyond what a Redis SIGKILL may lose), any ``transmissionId`` reached AEP under two ``_id``s
or as two versions, a push was dead-lettered for no expected reason, the pipeline did not drain or a
fault could not be injected; 130 on Ctrl-C (or SIGTERM); 2 when the stack could not start. The temp
dir (logs, AOF) is kept when the run failed or a process exited by itself, or with ``--keep``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import redis
import requests

from devkit import procfs, samples
from devkit.ledger import Ledger
from devkit.local import local_settings, settings_env
from devkit.procs import Process, RedisServer, celery_worker, free_port, gunicorn, wait_for
from devkit.sandbox import SandboxConfig, SandboxServer, SandboxState
from devkit.sandbox.client import SandboxClient
from shared import deadletter, keys, status
from shared.settings import Settings
from worker.transform import event_id

TOKEN = "soak-token-0123456789abcdef"  # noqa: S105 - a loopback-only test credential
INLET = "soak-inlet-0123456789abcdef"
SANDBOX = SandboxConfig(token_ttl=300, store_bodies=False)

#: Requests in flight at once; the receiver has 2 gunicorn workers, more would only queue there.
CONCURRENCY = 8
#: Share of pushes that are invalid, and that repeat a recent transmissionId.
INVALID_SHARE = 0.01
REPEAT_SHARE = 0.01
#: A repeat picks an original acknowledged this long ago (s): long enough for it to be ingested.
REPEAT_AGE = (3.0, 60.0)
#: Share of requests that carry an array, and the array sizes.
ARRAY_SHARE = 0.25
ARRAY_SIZES = (2, 20)
#: Pushes acknowledged this long before (and after) a Redis SIGKILL may be lost by design (s).
KILL_LOSS_BEFORE = 2.0
KILL_LOSS_AFTER = 1.0
#: A repeat reaching AEP besides its original is excused when a Redis SIGKILL (which may lose the
#: dedupe key) falls between the original's acknowledgement and this long after the repeat's.
KILL_DEDUPE_SLACK = 60.0
WORKER_READY_TIMEOUT = 60.0
#: Missing pushes described one by one in the printed verdict (the JSON report has them all).
MISSING_SHOWN = 10

#: Fault kinds and their weights once each has been injected once.
FAULT_WEIGHTS = {
    "worker_kill": 20,
    "redis_restart": 8,
    "redis_kill": 3,
    "aep_throttle": 12,
    "aep_500": 12,
    "aep_reject": 12,
    "token_expiry": 8,
    "aep_outage": 10,
    "aep_slow": 5,
}


class SoakError(Exception):
    """The stack could not be started or kept running."""


@dataclass(frozen=True)
class Options:
    """Command-line options."""

    minutes: float
    rate: float
    workers: int
    seed: int
    report: Path | None
    fault_every: float
    drain_timeout: float
    keep: bool


def parse_args(argv: list[str] | None = None) -> Options:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m devkit.soak",
        description="Run the pipeline under load and random faults, then check every acknowledged push.",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to post (default 10)")
    parser.add_argument("--rate", type=float, default=100.0, help="pushes per second (default 100)")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers, 2 processes each (default 2)")
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the traffic and faults (default: random)"
    )
    parser.add_argument("--report", type=Path, default=None, help="also write the report as JSON here")
    parser.add_argument(
        "--fault-every", type=float, default=15.0, help="mean seconds between faults; 0 for none (default 15)"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=180.0,
        help="longest wait for the pipeline to drain (default 180)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir (logs, AOF) after a passing run"
    )
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.workers < 1 or args.fault_every < 0:
        parser.error("--minutes and --rate must be positive, --workers at least 1, --fault-every 0 or more")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    return Options(
        minutes=args.minutes,
        rate=args.rate,
        workers=args.workers,
        seed=seed,
        report=args.report,
        fault_every=args.fault_every,
        drain_timeout=args.drain_timeout,
        keep=args.keep,
    )


def soak_settings(redis_url: str, sandbox_url: str) -> Settings:
    """The settings every process runs with: production defaults but for quicker recovery."""
    return local_settings(
        redis_url,
        sandbox_url,
        receiver_tokens=(TOKEN,),
        receiver_inlet_id=INLET,
        aep_timeout_seconds=5,
        pending_claim_seconds=5,
        delivery_backoff_cap_seconds=10,
    )


def tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and its direct children (a Celery worker and its pool), in kB."""
    return sum(procfs.rss_bytes(one) for one in [pid, *procfs.children(pid)]) // 1024


class LocalSandboxClient(SandboxClient):
    """The sandbox client, reading events straight from the in-process sandbox's state."""

    def __init__(self, url: str, state: SandboxState) -> None:
        super().__init__(url)
        self._state = state

    def events(self) -> list[dict[str, Any]]:
        """All events AEP accepted, oldest first (a copy, without an HTTP round trip)."""
        with self._state.lock:
            return list(self._state.events)

    def count(self) -> int:
        """How many events AEP accepted so far."""
        with self._state.lock:
            return len(self._state.events)


class SoakLedger(Ledger):
    """The ledger, plus when and as what each push was acknowledged, for the soak's checks."""

    def __init__(self, url: str, token: str, started: float) -> None:
        super().__init__(url, token)
        self.started = started
        self.lock = threading.Lock()
        #: transmissionId → first acknowledgement (monotonic s), receipt and kind.
        self.first_ack: dict[str, float] = {}
        self.receipts: dict[str, str] = {}
        self.kinds: dict[str, str] = {}
        #: transmissionId → (first acknowledgement, the repeat's acknowledgement).
        self.repeats: dict[str, tuple[float, float]] = {}
        #: Plain pushes acknowledged, oldest first: candidates for a repeat.
        self.recent: deque[tuple[float, str]] = deque()
        #: Originals already picked for a repeat (possibly still in flight).
        self.picked: set[str] = set()
        self.requests = 0
        self.refused_pushes = 0
        self._local = threading.local()
        self._sessions: list[requests.Session] = []

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
            with self.lock:
                self._sessions.append(session)
        return session

    def send(self, pushes: list[dict[str, Any]], kinds: list[str]) -> None:
        """Post one request (a push, or an array of them) and record what was acknowledged."""
        body: Any = pushes[0] if len(pushes) == 1 else pushes
        try:
            resp = self._session().post(f"{self.url}/v1/pushes", json=body, headers=self.headers, timeout=10)
        except requests.RequestException:
            with self.lock:
                self.requests += 1
                self.errors += 1  # no answer: nothing was promised, a sender would retry
            return
        now = time.monotonic()
        with self.lock:
            self.requests += 1
            if resp.status_code != 202:
                self.refused[resp.status_code] = self.refused.get(resp.status_code, 0) + 1
                self.refused_pushes += len(pushes)
                return
            try:
                receipt = str(resp.json().get("receipt", ""))
            except ValueError:
                receipt = ""
            for push, kind in zip(pushes, kinds, strict=True):
                tid = push["transmissionId"]
                self.acked[tid] = push
                if kind == "repeat":
                    self.repeats[tid] = (self.first_ack[tid], now)
                    continue
                self.first_ack[tid] = now
                self.receipts[tid] = receipt
                self.kinds[tid] = kind
                if kind == "plain":
                    self.recent.append((now, tid))

    def repeat_candidate(self, rng: random.Random) -> str | None:
        """A plain push acknowledged a few seconds ago and not repeated yet, if there is one."""
        now = time.monotonic()
        with self.lock:
            while self.recent and self.recent[0][0] < now - REPEAT_AGE[1]:
                self.recent.popleft()
            eligible = sum(1 for at, _ in self.recent if at <= now - REPEAT_AGE[0])
            for _ in range(5):
                if not eligible:
                    return None
                _, tid = self.recent[rng.randrange(eligible)]
                if tid not in self.picked:
                    self.picked.add(tid)
                    return tid
        return None

    def close(self) -> None:
        """Close every HTTP session the posting threads opened."""
        with self.lock:
            for session in self._sessions:
                session.close()
        self.http.close()


class Traffic:
    """Makes the requests to post: single pushes and arrays, with invalid pushes and repeats."""

    def __init__(self, ledger: SoakLedger, rng: random.Random) -> None:
        self.ledger = ledger
        self.rng = rng
        self._to_reject: deque[str] = deque()
        self._lock = threading.Lock()

    def reject_next(self, ids: list[str]) -> None:
        """Use these transmissionIds (already on AEP's reject list) for the next pushes."""
        with self._lock:
            self._to_reject.extend(ids)

    def next_request(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The pushes of the next request and the kind of each."""
        size = self.rng.randint(*ARRAY_SIZES) if self.rng.random() < ARRAY_SHARE else 1
        pushes: list[dict[str, Any]] = []
        kinds: list[str] = []
        tids: set[str] = set()
        while len(pushes) < size:
            push, kind = self._one()
            # A repeat and its original in one array would be one request's business, not dedupe's.
            if push["transmissionId"] in tids:
                continue
            tids.add(push["transmissionId"])
            pushes.append(push)
            kinds.append(kind)
        return pushes, kinds

    def _one(self) -> tuple[dict[str, Any], str]:
        with self._lock:
            rejected = self._to_reject.popleft() if self._to_reject else None
        if rejected:
            return samples.push(rejected), "reject"
        draw = self.rng.random()
        if draw < INVALID_SHARE:
            return samples.push(timestamp="not a time"), "invalid"
        if draw < INVALID_SHARE + REPEAT_SHARE and (tid := self.ledger.repeat_candidate(self.rng)):
            # Another eventType, so the sandbox shows which version AEP got if both got through.
            return samples.push(tid, eventType="SessionAttended"), "repeat"
        return samples.push(), "plain"


class Poster:
    """Posts the traffic at about ``rate`` pushes per second from a pool of threads until stopped."""

    def __init__(self, ledger: SoakLedger, traffic: Traffic, rate: float) -> None:
        self.ledger = ledger
        self.traffic = traffic
        self.rate = rate
        self.posted = 0
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(CONCURRENCY * 2)
        self._thread = threading.Thread(target=self._run, name="soak-poster", daemon=True)

    def start(self) -> None:
        """Start posting."""
        self._thread.start()

    def stop(self) -> None:
        """Stop posting and wait for the requests in flight."""
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        started = time.monotonic()
        with ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="soak-post") as pool:
            while not self._stop.is_set():
                now = time.monotonic()
                due = started + self.posted / self.rate
                if due > now:
                    self._stop.wait(due - now)
                    continue
                if due < now - 1:
                    # Fell behind (a slow receiver): resume the pace instead of bursting to catch up.
                    started = now - self.posted / self.rate
                if not self._slots.acquire(timeout=0.5):
                    continue
                pushes, kinds = self.traffic.next_request()
                self.posted += len(pushes)
                pool.submit(self._send, pushes, kinds)

    def _send(self, pushes: list[dict[str, Any]], kinds: list[str]) -> None:
        try:
            self.ledger.send(pushes, kinds)
        finally:
            self._slots.release()


@dataclass
class Slot:
    """One long-running process by name (a worker, the receiver), across its restarts."""

    name: str
    process: Process
    incarnation: int = 1
    #: Times the soak killed it, and times it exited by itself; each was followed by a restart.
    kills: int = 0
    crashes: int = 0
    #: Held by whoever is killing or restarting the process, so the two never cross.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass
class Crash:
    """A process that exited without being told to, and why, from its log."""

    at: float
    name: str
    exit_code: int | None
    last_words: str


def last_words(log_path: Path) -> str:
    """The last critical (else error) message of a log of JSON lines, else its last line."""
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    for level in ("CRITICAL", "ERROR"):
        for line in reversed(lines):
            if f'"level": "{level}"' in line:
                with contextlib.suppress(ValueError):
                    return str(json.loads(line).get("message", line))[:300]
    return lines[-1][:300] if lines else ""


class Stack:
    """Every process of the pipeline, started under ``workdir``, restarted when it dies, stopped together."""

    def __init__(self, workdir: Path, workers: int) -> None:
        self.workdir = workdir
        self.worker_names = [f"w{n}" for n in range(1, workers + 1)]
        self.redis = RedisServer(workdir / "redis")
        self.sandbox = SandboxServer(SANDBOX)
        self.slots: dict[str, Slot] = {}
        self.crashes: list[Crash] = []
        self.env: dict[str, str] = {}
        self.port = 0
        self.url = ""
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has begun: nothing is started any more."""
        return self._closed

    @property
    def workers(self) -> dict[str, Slot]:
        """The Celery workers' slots by name."""
        return {name: self.slots[name] for name in self.worker_names if name in self.slots}

    def start(self) -> None:
        """Start Redis, the sandbox, the receiver and the workers; wait until they are ready."""
        with self._lock:
            self.redis.start()
        self.sandbox.start()
        self.env = settings_env(soak_settings(self.redis.url, self.sandbox.url))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with self._lock:
            for name in ["receiver", *self.worker_names]:
                self.slots[name] = Slot(name, self._spawn(name, 1))
        for slot in self.slots.values():
            self._wait_ready(slot)

    def _spawn(self, name: str, incarnation: int) -> Process:
        log = self.workdir / f"{name}-{incarnation}.log"
        if name == "receiver":
            return gunicorn(self.env, self.port, log)
        return celery_worker(self.env, log, name=name)

    def _wait_ready(self, slot: Slot) -> None:
        proc = slot.process
        if slot.name == "receiver":
            ready = wait_for(
                lambda: not proc.alive() or requests.get(f"{self.url}/healthz", timeout=1).ok,
                timeout=WORKER_READY_TIMEOUT,
                what="the receiver",
            )
        else:
            ready = wait_for(
                lambda: "ready." in proc.output() or not proc.alive(),
                timeout=WORKER_READY_TIMEOUT,
                what=f"worker {slot.name}",
            )
        if not ready or not proc.alive():
            raise SoakError(f"{slot.name} did not start; see {proc.log_path}")

    def _restart(self, slot: Slot) -> bool:
        with self._lock:
            if self._closed:
                return False
            slot.incarnation += 1
            slot.process = self._spawn(slot.name, slot.incarnation)
        self._wait_ready(slot)
        return True

    def kill_worker(self, name: str, down: float) -> int:
        """SIGKILL a worker's whole process group, restart it ``down`` s later; returns the old pid."""
        slot = self.slots[name]
        with slot.lock:
            pid = slot.process.proc.pid
            slot.process.signal_group(signal.SIGKILL)
            slot.process.stop(timeout=5)
            time.sleep(down)
            if self._restart(slot):
                slot.kills += 1
        return pid

    def start_redis(self) -> None:
        """Start Redis again on its port, from its AOF."""
        with self._lock:
            if not self._closed:
                self.redis.start()

    def supervise(self, started: float) -> list[Crash]:
        """Restart processes that exited by themselves, as a restart policy would; return those exits."""
        found = []
        for slot in self.slots.values():
            # A slot whose lock is taken is being killed on purpose.
            if slot.process.alive() or not slot.lock.acquire(blocking=False):
                continue
            try:
                if slot.process.alive():
                    continue
                crash = Crash(
                    round(time.monotonic() - started, 2),
                    slot.name,
                    slot.process.proc.returncode,
                    last_words(slot.process.log_path),
                )
                slot.process.stop(timeout=1)
                found.append(crash)
                if self._restart(slot):
                    slot.crashes += 1
            finally:
                slot.lock.release()
        self.crashes += found
        return found

    def worker_rss_kb(self) -> dict[str, int]:
        """Resident memory of each worker (main process and pool), in kB."""
        return {name: tree_rss_kb(slot.process.proc.pid) for name, slot in self.workers.items()}

    def close(self) -> None:
        """Stop everything this stack started: SIGTERM to all at once, SIGKILL after 15 s."""
        with self._lock:
            self._closed = True
        procs = [slot.process for slot in self.slots.values()]
        for proc in procs:
            if proc.alive():
                proc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.stop(timeout=1)
        with contextlib.suppress(Exception):
            self.redis.kill()
        with contextlib.suppress(Exception):
            self.sandbox.stop()


@dataclass
class FaultRecord:
    """One injected fault: when (seconds since the start), what, and how it went."""

    at: float
    kind: str
    detail: str


@dataclass
class Injector:
    """Injects faults at random (seeded) intervals until stopped; one at a time."""

    stack: Stack
    sandbox: SandboxClient
    traffic: Traffic
    rng: random.Random
    mean_interval: float
    started: float
    say: Callable[[str], None]
    log: list[FaultRecord] = field(default_factory=list)
    redis_kills: list[float] = field(default_factory=list)
    rejected_ids: list[str] = field(default_factory=list)
    error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Start injecting, unless faults are off."""
        if self.mean_interval > 0:
            self._thread = threading.Thread(target=self._run, name="soak-faults", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 120) -> None:
        """Stop after the fault in progress (a kill is always followed by its restart)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def counts(self) -> dict[str, int]:
        """How many faults of each kind were injected."""
        found = Counter(record.kind for record in self.log)
        return {kind: found.get(kind, 0) for kind in FAULT_WEIGHTS}

    def _kinds(self) -> Iterator[str]:
        deck = list(FAULT_WEIGHTS)
        self.rng.shuffle(deck)
        yield from deck
        kinds, weights = list(FAULT_WEIGHTS), list(FAULT_WEIGHTS.values())
        while True:
            yield self.rng.choices(kinds, weights)[0]

    def _run(self) -> None:
        kinds = self._kinds()
        while True:
            gap = min(max(self.rng.expovariate(1 / self.mean_interval), 2.0), 3 * self.mean_interval)
            if self._stop.wait(gap):
                return
            kind = next(kinds)
            at = time.monotonic() - self.started
            try:
                detail = getattr(self, f"_{kind}")()
            except Exception as exc:
                if self.stack.closed:
                    return  # interrupted: the stack went away under the fault
                self.error = f"{kind} at +{at:.1f}s failed: {exc!r}"
                self.say(f"  +{at:6.1f}s  fault {kind} FAILED: {exc!r}")
                return
            if self.stack.closed:
                return  # interrupted: the restart that ends this fault did not happen
            self.log.append(FaultRecord(round(at, 2), kind, detail))
            self.say(f"  +{at:6.1f}s  fault {kind}: {detail}")

    def _worker_kill(self) -> str:
        names = sorted(self.stack.workers)
        # w1 lives through the run so its memory at the end says something about leaks.
        victims = names[1:] if len(names) > 1 else names
        name = self.rng.choice(victims)
        down = self.rng.uniform(0.5, 3.0)
        began = time.monotonic()
        pid = self.stack.kill_worker(name, down)
        back = time.monotonic() - began
        return f"SIGKILL of {name}'s process group (pid {pid}), back after {down:.1f}s, ready in {back:.1f}s"

    def _redis_restart(self) -> str:
        down = self.rng.uniform(1.0, 5.0)
        self.stack.redis.shutdown()
        time.sleep(down)
        self.stack.start_redis()
        return f"SHUTDOWN, restarted after {down:.1f}s"

    def _redis_kill(self) -> str:
        down = self.rng.uniform(1.0, 3.0)
        self.redis_kills.append(time.monotonic())
        self.stack.redis.kill()
        time.sleep(down)
        self.stack.start_redis()
        return f"SIGKILL, restarted after {down:.1f}s"

    def _aep_throttle(self) -> str:
        status_code = self.rng.choice([429, 503])
        count, retry_after = self.rng.randint(1, 4), self.rng.randint(1, 5)
        self.sandbox.faults(
            fail_next={"count": count, "status": status_code, "retry_after": str(retry_after)}
        )
        return f"next {count} request(s) answered {status_code} with Retry-After: {retry_after}"

    def _aep_500(self) -> str:
        status_code = self.rng.choice([500, 500, 502, 504])
        count = self.rng.randint(2, 8)
        self.sandbox.faults(fail_next={"count": count, "status": status_code})
        return f"next {count} request(s) answered {status_code}"

    def _aep_reject(self) -> str:
        new = [samples.push()["transmissionId"] for _ in range(self.rng.randint(3, 10))]
        mode = "request" if self.rng.random() < 0.3 else "message"
        self.rejected_ids += new
        # On the reject list before they are posted, so AEP can never have taken them.
        self.sandbox.faults(reject_ids=self.rejected_ids, reject_status=400, reject_mode=mode)
        self.traffic.reject_next(new)
        return f"{len(new)} transmissionId(s) of the next pushes refused by AEP (400, mode {mode})"

    def _token_expiry(self) -> str:
        self.sandbox.faults(expire_tokens=True)
        return "every AEP token expired"

    def _aep_outage(self) -> str:
        down = self.rng.uniform(2.0, 15.0)
        if self.rng.random() < 0.5:
            self.sandbox.faults(down_for_ms=int(down * 1000))
            return f"AEP answers 503 (no Retry-After) for {down:.1f}s"
        down = min(down, 8.0)
        self.stack.sandbox.stop()
        time.sleep(down)
        self.stack.sandbox.start()
        return f"AEP refuses connections for {down:.1f}s"

    def _aep_slow(self) -> str:
        lasting = self.rng.uniform(4.0, 8.0)
        self.sandbox.faults(slow_ms=6000)
        time.sleep(lasting)
        self.sandbox.faults(slow_ms=0)
        return f"AEP answers after 6s (worker timeout 5s) for {lasting:.1f}s"


def pipeline_state(client: redis.Redis) -> dict[str, Any] | None:
    """Depth and pending count of both streams, or None when Redis does not answer."""
    try:
        state = status.collect(client)
    except redis.RedisError:
        return None
    return {name: {k: state[name][k] for k in ("depth", "pending")} for name in ("inbox", "outbox")}


def drained(state: dict[str, Any] | None) -> bool:
    """Both streams empty and nothing pending."""
    return state is not None and all(v == 0 for stream in state.values() for v in stream.values())


def wait_drained(client: redis.Redis, timeout: float, tick: Callable[[], object]) -> bool:
    """Wait until the pipeline is drained (seen twice, a second apart); False after ``timeout``."""
    deadline = time.monotonic() + timeout
    streak = 0
    while time.monotonic() < deadline:
        tick()
        streak = streak + 1 if drained(pipeline_state(client)) else 0
        if streak >= 2:
            return True
        time.sleep(1)
    return False


def _near(at: float, times: list[float], before: float, after: float) -> bool:
    return any(t - before <= at <= t + after for t in times)


def judge(
    ledger: SoakLedger, sandbox: SandboxClient, client: redis.Redis, injector: Injector
) -> dict[str, Any]:
    """The ledger verdict, with the Redis-kill loss, dead letters and repeats sorted out."""
    verdict = ledger.verdict(sandbox, client)
    dead: dict[str, str] = verdict["dead"]
    kills = injector.redis_kills
    lost = [
        t for t in verdict["missing"] if _near(ledger.first_ack[t], kills, KILL_LOSS_BEFORE, KILL_LOSS_AFTER)
    ]
    lost_set = set(lost)
    missing = [t for t in verdict["missing"] if t not in lost_set]

    expected: dict[str, str] = {
        deadletter.Reason.AEP_REJECTED: "reject",
        deadletter.Reason.INVALID_PAYLOAD: "invalid",
    }
    unexpected_dead = {
        tid: reason for tid, reason in dead.items() if expected.get(reason) != ledger.kinds.get(tid)
    }
    types_by_tid: dict[str, set[str]] = {}
    for event in sandbox.events():
        if event["transmissionId"] in ledger.repeats:
            types_by_tid.setdefault(event["transmissionId"], set()).add(str(event["eventType"]))
    twice = [tid for tid, types in types_by_tid.items() if len(types) > 1]
    excused = [
        tid
        for tid in twice
        if any(ledger.repeats[tid][0] <= k <= ledger.repeats[tid][1] + KILL_DEDUPE_SLACK for k in kills)
    ]
    return {
        "acknowledged": verdict["acked"],
        "delivered": verdict["delivered"],
        "duplicates_by_id": verdict["resent"],
        "conflicting_ids": verdict["conflicting_ids"],
        "dead_by_reason": dict(sorted(Counter(dead.values()).items())),
        "dead_expected": len(dead) - len(unexpected_dead),
        "unexpected_dead": unexpected_dead,
        "repeats": len(ledger.repeats),
        "repeats_delivered_twice": sorted(set(twice) - set(excused)),
        "repeats_twice_after_redis_kill": sorted(excused),
        "lost_to_redis_kill": lost,
        "missing": missing,
    }


def explain_missing(
    tids: list[str], ledger: SoakLedger, client: redis.Redis, injector: Injector, workdir: Path
) -> list[dict[str, Any]]:
    """For each missing push: when it was acknowledged, the faults around it, what Redis still knows."""
    receiver_log = [
        line
        for path in sorted(workdir.glob("receiver-*.log"))
        for line in path.read_text(errors="replace").splitlines()
    ]
    out = []
    for tid in tids[:200]:
        at = ledger.first_ack[tid] - ledger.started
        receipt = ledger.receipts.get(tid, "")
        try:
            ingested: bool | None = bool(client.exists(keys.seen(event_id(tid))))
        except redis.RedisError:
            ingested = None
        out.append(
            {
                "transmissionId": tid,
                "kind": ledger.kinds.get(tid),
                "acknowledged_at_s": round(at, 2),
                "receipt": receipt,
                "dedupe_key_present": ingested,
                "faults_within_30s": [dataclasses.asdict(r) for r in injector.log if abs(r.at - at) <= 30],
                "receiver_log": [line for line in receiver_log if receipt and receipt in line][:3],
            }
        )
    return out


def _mb(kb: int) -> str:
    return f"{kb / 1024:.1f} MB"


def render(report: dict[str, Any]) -> str:
    """The human-readable verdict."""
    v, rss, posting = report["verdict"], report["worker_rss_kb"], report["posting"]
    dead = ", ".join(f"{reason} {n}" for reason, n in v["dead_by_reason"].items()) or "none"
    faults = ", ".join(f"{kind} {n}" for kind, n in report["faults"].items()) or "none"
    refused = ", ".join(f"{n} x {code}" for code, n in posting["refused_requests"].items()) or "none"

    def row(label: str, value: object, note: str = "") -> str:
        return f"  {label:<22}{value:>8}" + (f"   ({note})" if note else "")

    lines = [
        "",
        f"faults injected: {faults}",
        f"drained: {'yes' if report['drained'] else 'NO'} ({report['drain_seconds']:.1f}s after posting)",
        "",
        "verdict",
        row(
            "acknowledged",
            v["acknowledged"],
            f"{posting['requests']} requests; refused {refused}; unanswered {posting['unanswered_requests']}",
        ),
        row("delivered", v["delivered"]),
        row("duplicates by _id", v["duplicates_by_id"], "sent again under the same _id: allowed"),
        row("conflicting ids", len(v["conflicting_ids"])),
        row(
            "dead-lettered",
            sum(v["dead_by_reason"].values()),
            f"{dead}; unexpected: {len(v['unexpected_dead'])}",
        ),
        row(
            "repeats",
            v["repeats"],
            f"delivered besides the original: {len(v['repeats_delivered_twice'])}, "
            f"after a Redis kill: {len(v['repeats_twice_after_redis_kill'])}",
        ),
        row(
            "lost to Redis kill",
            len(v["lost_to_redis_kill"]),
            "expected, <= ~1 s of writes under appendfsync everysec",
        ),
        row("missing", len(v["missing"])),
        row("delivered rate", f"{report['delivered_per_second']:.1f}/s"),
        f"worker RSS (main + pool): start {_mb(rss['start_total'])}, end {_mb(rss['end_total'])},"
        f" peak {_mb(rss['peak_total'])}",
    ]
    for name, w in rss["workers"].items():
        history = f"killed {w['killed']}x, exited by itself {w['crashed']}x"
        lines.append(f"  {name}: start {_mb(w['start'])}, end {_mb(w['end'])} ({history})")
    crashes = report["exited_by_themselves"]
    if crashes:
        lines.append(
            f"processes that exited by themselves (restarted, as a restart policy would): {len(crashes)}"
        )
        lines += [
            f"  +{c['at']:.1f}s {c['name']} (code {c['exit_code']}): {c['last_words']}" for c in crashes
        ]
    detail = report.get("missing_detail", [])
    for item in detail[:MISSING_SHOWN]:
        faults = ", ".join(f"{f['kind']} at +{f['at']:.1f}s" for f in item["faults_within_30s"]) or "none"
        lines.append(
            f"  missing {item['transmissionId']} ({item['kind']}): acked at +{item['acknowledged_at_s']}s,"
            f" receipt {item['receipt']}, dedupe key {'set' if item['dedupe_key_present'] else 'absent'};"
            f" faults within 30 s: {faults}"
        )
    if len(v["missing"]) > MISSING_SHOWN:
        lines.append(f"  ... and {len(v['missing']) - MISSING_SHOWN} more (the JSON report lists them all)")
    lines.append("")
    if not report["passed"]:
        lines.append("FAIL: " + "; ".join(report["problems"]))
    elif crashes:
        lines.append(f"PASS, but {len(crashes)} process exit(s) by themselves (listed above)")
    else:
        lines.append("PASS")
    return "\n".join(lines)


class Soak:
    """One soak run: the stack, the load, the faults, and what the run found."""

    def __init__(self, options: Options, say: Callable[[str], None]) -> None:
        self.options = options
        self.say = say
        self.workdir = Path(tempfile.mkdtemp(prefix="rainbridge-soak-"))
        self.stack = Stack(self.workdir, options.workers)
        self.poster: Poster | None = None
        self.injector: Injector | None = None
        self.ledger: SoakLedger | None = None
        self.client: redis.Redis | None = None
        self.sandbox: LocalSandboxClient | None = None
        self.rss_start: dict[str, int] = {}
        self.rss_peak = 0
        self.passed = False

    def start(self) -> None:
        """Start the stack, the posting and the faults."""
        self.stack.start()
        self.client = self.stack.redis.client()
        self.sandbox = LocalSandboxClient(self.stack.sandbox.url, self.stack.sandbox.state)
        started = time.monotonic()
        self.ledger = SoakLedger(self.stack.url, TOKEN, started)
        traffic = Traffic(self.ledger, random.Random(self.options.seed))
        fault_rng = random.Random(self.options.seed + 1)
        self.injector = Injector(
            self.stack, self.sandbox, traffic, fault_rng, self.options.fault_every, started, self.say
        )
        self.poster = Poster(self.ledger, traffic, self.options.rate)
        self.poster.start()
        self.injector.start()

    def load(self) -> float:
        """Post for the run's duration while sampling memory; returns when posting stopped."""
        assert self.ledger and self.injector and self.poster and self.sandbox and self.client
        started = self.ledger.started
        duration = self.options.minutes * 60
        # Memory right after start-up grows with lazy imports and connections, not leaks.
        warmup = min(15.0, duration / 5)
        progress_every = 30.0 if duration >= 120 else 10.0
        next_progress = started + progress_every
        while (now := time.monotonic()) < started + duration and self.injector.error is None:
            time.sleep(min(1.0, started + duration - now))
            if not self.rss_start and time.monotonic() - started >= warmup:
                self.rss_start = self.stack.worker_rss_kb()
            self.rss_peak = max(self.rss_peak, sum(self.stack.worker_rss_kb().values()))
            self._supervise()
            if time.monotonic() >= next_progress:
                next_progress += progress_every
                self._progress()
        stopped = time.monotonic()
        self.poster.stop()
        self.injector.stop()
        return stopped

    def _supervise(self) -> None:
        assert self.ledger
        for crash in self.stack.supervise(self.ledger.started):
            self.say(
                f"  +{crash.at:6.1f}s  {crash.name} EXITED by itself (code {crash.exit_code}), restarted:"
                f" {crash.last_words}"
            )

    def _progress(self) -> None:
        assert self.ledger and self.sandbox and self.client
        state = pipeline_state(self.client)
        streams = (
            f"inbox {state['inbox']['depth']}, outbox {state['outbox']['depth']}"
            if state
            else "Redis not answering"
        )
        self.say(
            f"  +{time.monotonic() - self.ledger.started:6.1f}s  acknowledged {len(self.ledger.acked)},"
            f" at AEP {self.sandbox.count()}, {streams}"
        )

    def finish(self, posting_stopped: float) -> dict[str, Any]:
        """Lift the AEP faults, wait for the pipeline to drain and build the report."""
        assert self.ledger and self.injector and self.poster and self.sandbox and self.client
        ledger, injector, options = self.ledger, self.injector, self.options
        posted_for = posting_stopped - ledger.started
        self.say(f"posting stopped after {posted_for:.0f}s; waiting for the pipeline to drain")
        # Rejects stay: a message AEP refused must not be accepted on a later try.
        with contextlib.suppress(requests.RequestException):
            self.sandbox.faults(fail_next=None, down_for_ms=0, slow_ms=0)
        is_drained = wait_drained(self.client, options.drain_timeout, self._supervise)
        drained_at = time.monotonic()
        rss_end = self.stack.worker_rss_kb()
        self.rss_peak = max(self.rss_peak, sum(rss_end.values()))
        rss_start = self.rss_start or dict(rss_end)
        verdict = judge(ledger, self.sandbox, self.client, injector)

        problems = []
        if verdict["missing"]:
            problems.append(f"{len(verdict['missing'])} acknowledged push(es) missing")
        if verdict["conflicting_ids"]:
            problems.append(f"{len(verdict['conflicting_ids'])} transmissionId(s) under two _ids")
        if verdict["repeats_delivered_twice"]:
            problems.append(
                f"{len(verdict['repeats_delivered_twice'])} repeat(s) delivered besides the original"
            )
        if verdict["unexpected_dead"]:
            problems.append(
                f"{len(verdict['unexpected_dead'])} push(es) dead-lettered for no expected reason"
            )
        if not is_drained:
            problems.append(f"the pipeline did not drain in {options.drain_timeout:g}s")
        if injector.error:
            problems.append(f"fault injection failed: {injector.error}")
        self.passed = not problems
        report: dict[str, Any] = {
            "options": {
                k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(options).items()
            },
            "workdir": str(self.workdir),
            "settings": {
                "PENDING_CLAIM_SECONDS": 5,
                "DELIVERY_BACKOFF_CAP_SECONDS": 10,
                "AEP_TIMEOUT_SECONDS": 5,
                "sandbox_token_ttl": SANDBOX.token_ttl,
            },
            "posting": {
                "seconds": round(posting_stopped - ledger.started, 1),
                "pushes_posted": self.poster.posted,
                "requests": ledger.requests,
                "refused_requests": {str(k): n for k, n in sorted(ledger.refused.items())},
                "refused_pushes": ledger.refused_pushes,
                "unanswered_requests": ledger.errors,
            },
            "faults": injector.counts() if options.fault_every > 0 else {},
            "fault_log": [dataclasses.asdict(r) for r in injector.log],
            "redis_kills_at_s": [round(k - ledger.started, 2) for k in injector.redis_kills],
            "drained": is_drained,
            "drain_seconds": round(drained_at - posting_stopped, 1),
            "verdict": verdict,
            "delivered_per_second": round(verdict["delivered"] / max(drained_at - ledger.started, 1e-9), 1),
            "worker_rss_kb": {
                "start_total": sum(rss_start.values()),
                "end_total": sum(rss_end.values()),
                "peak_total": self.rss_peak,
                "workers": {
                    name: {
                        "start": rss_start.get(name, 0),
                        "end": rss_end.get(name, 0),
                        "killed": slot.kills,
                        "crashed": slot.crashes,
                    }
                    for name, slot in self.stack.workers.items()
                },
            },
            "exited_by_themselves": [dataclasses.asdict(c) for c in self.stack.crashes],
            "passed": self.passed,
            "problems": problems,
        }
        if verdict["missing"]:
            report["missing_detail"] = explain_missing(
                verdict["missing"], ledger, self.client, injector, self.workdir
            )
        return report

    def close(self) -> None:
        """Stop posting and faults, stop every process, and remove the temp dir of a passing run."""
        if self.poster is not None:
            with contextlib.suppress(Exception):
                self.poster.stop()
        if self.injector is not None:
            self.injector.stop(timeout=0)
        # Closed first, a restart the injector has in hand becomes a no-op instead of an orphan.
        self.stack.close()
        if self.injector is not None:
            self.injector.stop(timeout=10)
        with contextlib.suppress(Exception):
            if self.ledger is not None:
                self.ledger.close()
            if self.client is not None:
                self.client.close()
            if self.sandbox is not None:
                self.sandbox.http.close()
        if self.passed and not self.stack.crashes and not self.options.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            self.say(f"logs and data kept in {self.workdir}")


def run(options: Options) -> int:
    """Run the soak and print (and write) its report; returns the exit status."""
    say = _printer()
    soak = Soak(options, say)
    say(
        f"rainbridge soak: {options.minutes:g} min at {options.rate:g} pushes/s, {options.workers} worker(s),"
        f" faults every ~{options.fault_every:g}s, seed {options.seed}; logs in {soak.workdir}"
    )
    try:
        try:
            soak.start()
        except (SoakError, AssertionError, OSError, RuntimeError) as exc:
            say(f"soak: could not start the stack: {exc}")
            return 2
        report = soak.finish(soak.load())
        say(render(report))
        if options.report:
            options.report.write_text(json.dumps(report, indent=2, default=str) + "\n")
            say(f"report written to {options.report}")
        return 0 if report["passed"] else 1
    except KeyboardInterrupt:
        say("\nsoak: interrupted; stopping everything")
        return 130
    finally:
        # Cleanup is bounded (about 30 s); a second Ctrl-C must not cut it short and orphan children.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        soak.close()


def _printer() -> Callable[[str], None]:
    lock = threading.Lock()

    def say(text: str) -> None:
        with lock:
            print(text, flush=True)

    return say


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM and SIGHUP take the Ctrl-C path, so the children are stopped either way.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m devkit.soak``."""
    options = parse_args(argv)
    # Started in the background by a non-interactive shell, SIGINT arrives ignored; take it back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    return run(options)


if __name__ == "__main__":
    sys.exit(main())
