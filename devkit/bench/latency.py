"""End-to-end and sustained sections: delivery latency at a steady rate, and batching under a trickle."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from devkit.bench.environment import Bench, pct
from devkit.bench.loadgen import push_template
from devkit.bench.plan import TOKEN
from devkit.bench.processes import CpuMeter, gunicorn_app, wait_ready
from devkit.procfs import children
from devkit.procs import Process, celery_worker, free_port, wait_for
from shared.settings import Settings


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
