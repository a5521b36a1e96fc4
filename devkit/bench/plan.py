"""What a benchmark run measures: the sections, their sizes (quick or full), and the run's constants."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

from devkit.procs import ROOT
from devkit.sandbox import SandboxConfig

SECTIONS = ("receiver", "drain", "sustained", "batching", "memory", "scrape", "dedupe", "ratecap")

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
