"""The fleet sections: dedupe memory per remembered id, and two workers under the AEP rate cap."""

from __future__ import annotations

import os
import time
from typing import Any

from devkit.bench.environment import Bench
from devkit.procs import celery_worker, wait_for
from shared import keys

#: The rate-cap run: two workers drain this backlog under this cap.
CAP_RATE = 200
CAP_BACKLOG = 3000


def section_dedupe(bench: Bench, n: int = 1_000_000) -> dict[str, Any]:
    """Redis bytes per remembered transmissionId at ``n`` ids: the dedupe sets, and a key per id."""
    from worker import dedupe  # noqa: PLC0415 - reads the worker's modules only when measured

    settings = bench.settings()
    ids = [os.urandom(16).hex() for _ in range(n)]

    def used() -> int:
        return int(bench.redis.info("memory")["used_memory"])

    bench.fresh()
    before = used()
    for start in range(0, n, 10_000):
        dedupe.remember(bench.redis, settings, ids[start : start + 10_000])
    sets = (used() - before) / n
    # For comparison, what earlier versions kept: one key per id with the TTL (SET NX EX).
    bench.fresh()
    before = used()
    for start in range(0, n, 10_000):
        with bench.redis.pipeline(transaction=False) as pipe:
            for event_id in ids[start : start + 10_000]:
                pipe.set(keys.seen(event_id), "1", nx=True, ex=settings.dedupe_ttl_seconds)
            pipe.execute()
    per_key = (used() - before) / n
    bench.fresh()
    print(
        f"  dedupe: {sets:.1f} B per id in the sets, {per_key:.1f} B as a key per id ({n:,} ids)", flush=True
    )
    return {"ids": n, "bytes_per_id": round(sets, 1), "bytes_per_id_key_each": round(per_key, 1)}


def section_rate_cap(bench: Bench) -> dict[str, Any]:
    """Two workers drain a backlog under AEP_MAX_MESSAGES_PER_SECOND: the busiest second at AEP, the time."""
    bench.fresh()
    bench.fill_inbox(CAP_BACKLOG, "cap")
    env = {**bench.env(), "AEP_MAX_MESSAGES_PER_SECOND": str(CAP_RATE)}
    with bench.tracker.scope():
        for n in (1, 2):
            worker = celery_worker(env, bench.log(f"cap-worker-{n}.log"), name=f"cap{n}")
            bench.tracker.add(f"rate-cap worker {n}", worker.stop)
        wait_for(
            lambda: int(bench.sandbox_stats()["events"]) >= CAP_BACKLOG,
            timeout=CAP_BACKLOG / CAP_RATE * 4 + 60,
            interval=0.5,
            what="the capped drain",
        )
    sent = [(r["timeMs"] / 1000, r["messages"]) for r in bench.sandbox_records("requests") if r["messages"]]
    sent.sort()
    busiest = 0
    for i, (start, _) in enumerate(sent):
        busiest = max(busiest, sum(count for when, count in sent[i:] if when < start + 1.0))
    span = sent[-1][0] - sent[0][0] if sent else float("nan")
    implied = CAP_BACKLOG / CAP_RATE
    print(
        f"  rate cap {CAP_RATE}/s, 2 workers, {CAP_BACKLOG:,} queued: busiest second {busiest},"
        f" drained in {span:.1f} s (the cap allows {implied:.0f} s)",
        flush=True,
    )
    return {
        "cap": CAP_RATE,
        "events": CAP_BACKLOG,
        "busiest_second": busiest,
        "seconds": round(span, 1),
        "implied_seconds": implied,
        "requests": len(sent),
        "at": time.time(),
    }
