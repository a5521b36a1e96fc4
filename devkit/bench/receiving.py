"""The receiver section: req/s and latency against the parse-only and parse + XADD baselines."""

from __future__ import annotations

import functools
from typing import Any

import requests

from devkit.bench.environment import Bench, median
from devkit.bench.loadgen import WRK_SCRIPT, push_template, python_round, wrk_round
from devkit.bench.plan import TOKEN
from devkit.bench.processes import CpuMeter, gunicorn_app
from devkit.procfs import children
from devkit.procs import Process, free_port, wait_for


def _healthy(http: requests.Session, url: str) -> bool:
    return http.get(url, timeout=1).ok


def section_receiver(bench: Bench) -> dict[str, Any]:
    """The receiver against the baseline, interleaved rounds, no workers running."""
    plan = bench.plan
    env = bench.env()
    use_wrk = plan.load_generator == "wrk"
    script = bench.work / "push.lua"
    head, tail = push_template()
    script.write_text(WRK_SCRIPT % {"token": TOKEN, "head": head, "tail": tail, "run": bench.run_id})
    apps = {
        "baseline": "devkit.bench_baseline:create_app()",
        "xadd": "devkit.bench_baseline:create_xadd_app()",
        "receiver": "receiver.app:create_app()",
        # The same floor on gunicorn's sync worker, which slow clients can stall (see receiver.server).
        "xadd_sync": "devkit.bench_baseline:create_xadd_app()",
    }
    urls: dict[str, str] = {}
    servers: dict[str, Process] = {}
    for name, target in apps.items():
        port = free_port()
        flags = ("--worker-class", "sync") if name.endswith("_sync") else ()
        servers[name] = gunicorn_app(env, target, port, bench.log(f"gunicorn-{name}.log"), *flags)
        bench.tracker.add(f"gunicorn {name}", servers[name].stop)
        urls[name] = f"http://127.0.0.1:{port}/v1/pushes"
    for name, url in urls.items():
        health = url.replace("/v1/pushes", "/healthz")
        wait_for(functools.partial(_healthy, bench.http, health), timeout=30, what=f"gunicorn {name}")

    def measure(name: str, seconds: float) -> dict[str, Any]:
        bench.redis.flushall()
        server = servers[name].proc.pid
        meter = CpuMeter({"gunicorn": [server, *children(server)], "redis-server": [bench.redis_pid]})
        meter.start()
        if use_wrk:
            result = wrk_round(urls[name], script, seconds, plan.connections)
        else:
            result = python_round(urls[name], seconds, plan.connections, bench.work, bench.run_id)
        cpu = meter.stop()["cpu_s"]
        # CPU per request varies less than req/s on a shared machine: it is what contention cannot hide.
        result["gunicorn_cpu_us_per_request"] = round(cpu["gunicorn"] / max(result["requests"], 1) * 1e6, 1)
        result["redis_cpu_us_per_request"] = round(cpu["redis-server"] / max(result["requests"], 1) * 1e6, 1)
        return result

    rounds: list[dict[str, Any]] = []
    for n in range(plan.rounds):
        for name in apps:
            measure(name, plan.warmup_seconds)  # connections, caches, and the JIT-less warm path
            result = measure(name, plan.round_seconds)
            result.update(app=name, round=n + 1, flagged=bool(result["non2xx"] or result["socket_errors"]))
            rounds.append(result)
            line = f"  receiver round {n + 1} {name:8s} {result['rps']:8.0f} req/s"
            line += (
                f"  p50 {result['p50_ms']:.1f} ms  p99 {result['p99_ms']:.1f} ms  non-2xx {result['non2xx']}"
            )
            print(line, flush=True)
    profile: dict[str, Any] = {}
    if bench.profiler.enabled:
        # An extra round, not counted: py-spy takes CPU from the very processes it watches.
        bench.profiler.attach("receiver-gunicorn", children(servers["receiver"].proc.pid))
        measure("receiver", plan.round_seconds)
        profile = bench.profiler.collect()
    summary: dict[str, Any] = {}
    for name in apps:
        good = [r for r in rounds if r["app"] == name and not r["flagged"]]
        summary[name] = {
            "rps": median([r["rps"] for r in good]),
            "p50_ms": median([r["p50_ms"] for r in good]),
            "p99_ms": median([r["p99_ms"] for r in good]),
            "cpu_us_per_request": median([r["gunicorn_cpu_us_per_request"] for r in good]),
            "rounds_counted": len(good),
            "rounds_flagged": sum(1 for r in rounds if r["app"] == name and r["flagged"]),
            "non2xx": sum(r["non2xx"] for r in rounds if r["app"] == name),
            "socket_errors": sum(r["socket_errors"] for r in rounds if r["app"] == name),
        }
    base, recv = summary["baseline"], summary["receiver"]
    return {
        "load_generator": "wrk" if use_wrk else "python",
        "connections": plan.connections,
        "gunicorn": "2 workers of receiver.server.Worker (gevent), no access log; xadd_sync: 2 sync workers",
        "round_seconds": plan.round_seconds,
        "rounds": rounds,
        **summary,
        "rps_ratio": recv["rps"] / base["rps"] if base["rps"] else float("nan"),
        "rps_ratio_to_xadd": recv["rps"] / summary["xadd"]["rps"] if summary["xadd"]["rps"] else float("nan"),
        "xadd_rps_ratio": summary["xadd"]["rps"] / base["rps"] if base["rps"] else float("nan"),
        "p99_ratio": recv["p99_ms"] / base["p99_ms"] if base["p99_ms"] else float("nan"),
        "p99_ratio_to_xadd": recv["p99_ms"] / summary["xadd"]["p99_ms"]
        if summary["xadd"]["p99_ms"]
        else float("nan"),
        "profile": profile,
    }
