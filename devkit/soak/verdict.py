"""The verdict: the pipeline drained, nothing acknowledged missing, and the report that says so."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from devkit.sandbox.client import SandboxClient
from devkit.soak.accounting import SoakLedger
from devkit.soak.faults import Injector
from devkit.soak.options import KILL_DEDUPE_SLACK, KILL_LOSS_AFTER, KILL_LOSS_BEFORE, MISSING_SHOWN
from shared import deadletter, status
from shared.settings import Settings
from worker import dedupe
from worker.transform import event_id


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
    tids: list[str],
    ledger: SoakLedger,
    client: redis.Redis,
    injector: Injector,
    workdir: Path,
    *,
    settings: Settings,
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
            ingested: bool | None = dedupe.remembered(client, settings, event_id(tid))
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
