"""The scrape section: what one /metrics scrape costs with no dead letters and with many."""

from __future__ import annotations

import json
import time
from typing import Any

from devkit.bench.environment import Bench
from devkit.samples import push as sample_push
from shared import keys
from shared.records import LetterRecord


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
