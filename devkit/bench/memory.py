"""The memory section: Redis bytes per queued push and per remembered id, over a long drain."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import redis

from devkit.bench.environment import Bench
from devkit.bench.processes import wait_ready
from devkit.procfs import children, rss_bytes
from devkit.procs import celery_worker
from shared import keys


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
