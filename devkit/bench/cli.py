"""``python -m devkit.bench``: run the chosen sections, print the table, save results and chart."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from devkit.bench.chart import draw_chart
from devkit.bench.draining import publish_main, section_drain
from devkit.bench.environment import Bench, loadavg
from devkit.bench.fleet import section_dedupe, section_rate_cap
from devkit.bench.latency import section_end_to_end
from devkit.bench.loadgen import loadgen_main
from devkit.bench.memory import section_memory
from devkit.bench.plan import SECTIONS, Plan
from devkit.bench.processes import Tracker
from devkit.bench.receiving import section_receiver
from devkit.bench.results import print_profiles, print_table, rows_for
from devkit.bench.scrape import section_scrape
from devkit.procs import BIN


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
    if "dedupe" in plan.sections:
        steps.append(("dedupe", lambda: section_dedupe(bench)))
    if "ratecap" in plan.sections:
        steps.append(("ratecap", lambda: section_rate_cap(bench)))
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
