"""Load generation: wrk when installed, else a Python client, run in a process of its own."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from devkit.bench.environment import encode_push, pct
from devkit.bench.plan import TID_MARK, TOKEN
from devkit.procs import ROOT
from devkit.samples import push as sample_push


def push_template() -> tuple[str, str]:
    """A ~600-byte push as JSON, split around its transmissionId."""
    head, tail = encode_push(sample_push(TID_MARK)).split(TID_MARK)
    return head, tail


WRK_SCRIPT = """
wrk.method = "POST"
wrk.path = "/v1/pushes"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
local head = [==[%(head)s]==]
local tail = [==[%(tail)s]==]
local threads = 0
local counter = 0
function setup(thread)
  threads = threads + 1
  thread:set("tn", threads)
end
function request()
  counter = counter + 1
  return wrk.format(nil, nil, nil, head .. "%(run)s-" .. tn .. "-" .. counter .. tail)
end
function done(summary, latency, requests)
  local p = {}
  for _, q in ipairs({50, 75, 90, 95, 99, 99.9}) do
    p[#p + 1] = string.format('"%%s":%%d', q, latency:percentile(q))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d,"mean_us":%%.1f,"max_us":%%d,"percentiles_us":{%%s}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, table.concat(p, ",")))
end
"""


def wrk_round(url: str, script: Path, seconds: float, connections: int) -> dict[str, Any]:
    """One wrk run against ``url``: req/s, latency percentiles (ms), errors."""
    args = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds:g}s", "--timeout", "5s"]
    args += ["-s", str(script), url]
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {done.stdout[-500:]} {done.stderr[-500:]}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    # wrk counts a status >= 400 as an error; our apps answer 202, so that is every non-2xx here.
    return {
        "requests": raw["requests"],
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": raw["percentiles_us"]["50"] / 1000,
        "p99_ms": raw["percentiles_us"]["99"] / 1000,
        "percentiles_ms": {q: v / 1000 for q, v in raw["percentiles_us"].items()},
        "non2xx": raw["status"],
        "socket_errors": raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
    }


def python_round(url: str, seconds: float, connections: int, work: Path, run_id: str) -> dict[str, Any]:
    """The same measurement as :func:`wrk_round` with the Python load generator (no wrk here)."""
    records = run_loadgen(
        {"url": url, "mode": "closed", "concurrency": connections, "duration": seconds},
        work,
        f"{run_id}-{uuid.uuid4().hex[:6]}",
    )
    lat = [(r[3] - r[2]) * 1000 for r in records]
    span = max(r[3] for r in records) - min(r[2] for r in records) if records else 1.0
    ok = sum(1 for r in records if 200 <= r[4] < 300)
    return {
        "requests": len(records),
        "rps": round(len(records) / span, 1),
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "percentiles_ms": {str(q): pct(lat, q) for q in (50, 75, 90, 95, 99, 99.9)},
        "non2xx": sum(1 for r in records if r[4] and not 200 <= r[4] < 300),
        "socket_errors": sum(1 for r in records if r[4] == 0),
        "ok": ok,
    }


def run_loadgen(spec: dict[str, Any], work: Path, tid_prefix: str) -> list[list[Any]]:
    """Run the load generator in its own process; its records [i, due, sent, acked, status]."""
    head, tail = push_template()
    spec = {**spec, "token": TOKEN, "head": head, "tail": tail, "tid_prefix": tid_prefix}
    spec_path, out_path = work / f"loadgen-{tid_prefix}.json", work / f"loadgen-{tid_prefix}.out.json"
    spec_path.write_text(json.dumps(spec))
    args = [sys.executable, "-m", "devkit.bench", "_loadgen", str(spec_path), str(out_path)]
    subprocess.run(args, cwd=ROOT, timeout=float(spec["duration"]) + 120, check=True)
    records: list[list[Any]] = json.loads(out_path.read_text())["records"]
    spec_path.unlink()
    out_path.unlink()
    return records


def loadgen_main(spec_path: str, out_path: str) -> int:
    """Entry point of the load-generator process."""
    spec = json.loads(Path(spec_path).read_text())
    started = time.process_time()
    records = asyncio.run(_generate(spec))
    # Its own CPU time, measured here: once it has exited, /proc no longer has it.
    out = {"records": records, "cpu_s": round(time.process_time() - started, 2)}
    Path(out_path).write_text(json.dumps(out))
    return 0


class _Requester:
    """Sends one push per connection, as the receiver's clients do, and records what happened."""

    def __init__(self, spec: dict[str, Any]) -> None:
        url = re.match(r"http://([^:/]+):(\d+)(/.*)", spec["url"])
        assert url is not None, spec["url"]
        self.host, self.port, path = url.group(1), int(url.group(2)), url.group(3)
        self.head, self.tail, self.prefix = spec["head"].encode(), spec["tail"].encode(), spec["tid_prefix"]
        self.request_head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {spec['token']}\r\nContent-Type: application/json\r\n"
            "Connection: close\r\nContent-Length: %d\r\n\r\n"
        )
        #: [i, due, sent, answered, status] per request, times in epoch seconds; status 0 = no answer.
        self.records: list[list[Any]] = []

    async def one(self, i: int, due: float) -> None:
        """POST push ``i`` and wait for the whole answer."""
        loop = asyncio.get_running_loop()
        body = self.head + f"{self.prefix}-{i:08d}".encode() + self.tail
        sent = time.time()
        status = 0
        # Raw non-blocking sockets: asyncio's streams cost a third more CPU, taken from the pipeline.
        sock = socket.socket()
        sock.setblocking(False)
        try:
            async with asyncio.timeout(10):
                await loop.sock_connect(sock, (self.host, self.port))
                await loop.sock_sendall(sock, (self.request_head % len(body)).encode() + body)
                # Gunicorn's sync workers close the connection after each answer: read to the end.
                answer = b""
                while chunk := await loop.sock_recv(sock, 65536):
                    answer += chunk
            status = int(answer[9:12]) if answer.startswith(b"HTTP/1.") else 0
        except (OSError, TimeoutError, ValueError):
            status = 0
        finally:
            sock.close()
        self.records.append([i, due, sent, time.time(), status])


async def _generate(spec: dict[str, Any]) -> list[list[Any]]:
    """Open loop (``rate`` per second, on schedule whatever the answers) or closed loop (``concurrency``)."""
    requester = _Requester(spec)
    duration = float(spec["duration"])
    if spec["mode"] == "closed":
        deadline = time.monotonic() + duration
        counter = itertools.count()

        async def user() -> None:
            while time.monotonic() < deadline:
                await requester.one(next(counter), time.time())

        await asyncio.gather(*(user() for _ in range(int(spec["concurrency"]))))
        return requester.records

    rate = float(spec["rate"])
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(512)  # bounded, so a stalled receiver cannot exhaust sockets
    tasks: set[asyncio.Task[None]] = set()
    start_mono, start_wall = loop.time(), time.time()

    async def bounded(i: int, due: float) -> None:
        async with limit:
            await requester.one(i, due)

    for i in range(round(rate * duration)):
        delay = start_mono + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(bounded(i, start_wall + i / rate))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*list(tasks))
    return requester.records
