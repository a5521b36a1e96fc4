"""``python -m devkit.soak``: run the soak, print the report, exit 0 on PASS."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import redis
import requests

from devkit.soak.accounting import LocalSandboxClient, SoakLedger
from devkit.soak.faults import Injector
from devkit.soak.options import SANDBOX, TOKEN, Options, SoakError, parse_args
from devkit.soak.stack import Stack
from devkit.soak.traffic import Poster, Traffic
from devkit.soak.verdict import explain_missing, judge, pipeline_state, render, wait_drained
from shared.settings import Settings


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
                verdict["missing"],
                ledger,
                self.client,
                injector,
                self.workdir,
                settings=Settings.from_env(self.stack.env),
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
