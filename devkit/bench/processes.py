"""The processes a section starts (gunicorn, Celery workers), and meters of their CPU time and memory."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from devkit.bench.profiles import summarize_profile
from devkit.procfs import cpu_seconds
from devkit.procs import BIN, Process, wait_for


class Tracker:
    """Stops what was started, newest first: at the end of a section, and all of it at exit."""

    def __init__(self) -> None:
        self._stoppers: list[tuple[str, Callable[[], None]]] = []

    def add(self, name: str, stop: Callable[[], None]) -> None:
        """Remember how to stop ``name``."""
        self._stoppers.append((name, stop))

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Stop on exit whatever was started inside the block."""
        mark = len(self._stoppers)
        try:
            yield
        finally:
            self.unwind(mark)

    def unwind(self, mark: int = 0) -> None:
        """Stop everything added after ``mark``."""
        while len(self._stoppers) > mark:
            name, stop = self._stoppers[-1]
            try:
                stop()
            except Exception as exc:
                print(f"bench: could not stop {name}: {exc}", file=sys.stderr)
            # Popped only once stopped, so an interrupted stop is tried again by the final unwind.
            self._stoppers.pop()


class CpuMeter:
    """CPU seconds used by named processes between ``start()`` and ``stop()``."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}
        self._t0 = 0.0

    def _now(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.pids.items()}

    def start(self) -> None:
        """Take the first reading."""
        self._t0 = time.monotonic()
        self._start = self._now()

    def stop(self) -> dict[str, Any]:
        """CPU seconds per process and as a share of the machine over the interval."""
        wall = max(time.monotonic() - self._t0, 1e-6)
        used = {name: round(v - self._start.get(name, 0.0), 2) for name, v in self._now().items()}
        cores = os.cpu_count() or 1
        return {
            "wall_s": round(wall, 2),
            "cpu_s": used,
            "share_of_machine": {name: round(v / (wall * cores), 3) for name, v in used.items()},
        }


def wait_ready(proc: Process, what: str, timeout: float = 60) -> None:
    """Wait for a Celery worker's "ready." line; fail with its log if it died first."""
    wait_for(lambda: "ready." in proc.output() or not proc.alive(), timeout=timeout, what=what)
    if not proc.alive():
        raise RuntimeError(f"{what} exited:\n{proc.output()[-3000:]}")


def gunicorn_app(env: dict[str, str], app: str, port: int, log: Path, *flags: str) -> Process:
    """``app`` under gunicorn as the README runs it: 2 workers of the class gunicorn.conf.py sets."""
    args = [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "2", *flags, app]
    return Process(args, env, log)


def naive_worker(env: dict[str, str], log: Path) -> Process:
    """The one-task-per-push worker, with the same flags as the real one."""
    from devkit import bench_naive  # noqa: PLC0415 - loads the worker modules; the load generator needs none

    args = [
        str(BIN / "celery"), "-A", "devkit.bench_naive", "worker",
        "--loglevel", "INFO", "--pool", "prefork", "--concurrency", "2",
        "--queues", bench_naive.QUEUE, "--hostname", "naive@%h", "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    return Process(args, env, log)


def table_worker(env: dict[str, str], log: Path) -> Process:
    """The real worker with the hand-written table in place of the mapping (devkit.bench_table)."""
    args = [
        str(BIN / "celery"), "-A", "devkit.bench_table", "worker", "--loglevel", "INFO",
        "--concurrency", "2", "--hostname", "table@%h", "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    return Process(args, env, log)


class Profiler:
    """py-spy recorders attached to running processes, stopped (and summarised) on demand."""

    def __init__(self, enabled: bool, out: Path, tracker: Tracker) -> None:
        self.enabled = enabled
        self.out = out
        self.tracker = tracker
        self._running: list[tuple[str, Path, subprocess.Popen[bytes], float]] = []

    def attach(self, role: str, pids: list[int]) -> None:
        """Start recording every pid in ``pids`` as ``role``; a no-op unless profiling."""
        if not self.enabled:
            return
        spy = shutil.which("py-spy") or str(BIN / "py-spy")
        for n, pid in enumerate(pids, 1):
            path = self.out / f"profile-{role}{'-' + str(n) if len(pids) > 1 else ''}.txt"
            args = [spy, "record", "--pid", str(pid), "--rate", "100", "--nonblocking", "--format", "raw"]
            args += ["--full-filenames", "-o", str(path)]
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.tracker.add(f"py-spy {role}", functools.partial(_stop_spy, proc))
            self._running.append((role, path, proc, time.monotonic()))

    def collect(self) -> dict[str, Any]:
        """Stop every recorder and summarise the samples by role."""
        by_role: dict[str, list[Path]] = {}
        seconds: dict[str, float] = {}
        for role, path, proc, started in self._running:
            seconds[role] = seconds.get(role, 0.0) + time.monotonic() - started
            _stop_spy(proc)
            by_role.setdefault(role, []).append(path)
        self._running = []
        return {role: summarize_profile(paths, seconds[role]) for role, paths in by_role.items() if paths}


def _stop_spy(proc: subprocess.Popen[bytes]) -> None:
    # SIGINT makes py-spy write what it recorded; SIGKILL only if it does not finish.
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
