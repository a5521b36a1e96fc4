"""The soak's command line, its constants (traffic mix, fault weights, tolerances) and its settings."""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

from devkit.local import local_settings
from devkit.sandbox import SandboxConfig
from shared.settings import Settings

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
