"""The faults the soak injects, one at a time at seeded intervals, and the record of each."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from devkit import samples
from devkit.sandbox.client import SandboxClient
from devkit.soak.options import FAULT_WEIGHTS
from devkit.soak.stack import Stack
from devkit.soak.traffic import Traffic


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
