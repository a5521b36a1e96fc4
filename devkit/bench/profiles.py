"""Where the time goes: py-spy profiles summarised by package and function."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from devkit.procs import ROOT

_SITE = re.compile(r"/site-packages/([^/]+)/")

_STDLIB = re.compile(r"/lib/python3\.\d+/([^/]+?)(?:\.py|/)")

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _package(path: str) -> str:
    """A frame's file as a short owner name: a library, the stdlib module, or a project module."""
    if path.startswith(str(ROOT) + "/") and "/.venv/" not in path:
        return path[len(str(ROOT)) + 1 :].removesuffix(".py").replace("/", ".")
    if m := _SITE.search(path):
        return m.group(1)
    if m := _STDLIB.search(path):
        return f"stdlib {m.group(1)}"
    return path.rsplit("/", 1)[-1]


def summarize_profile(paths: list[Path], seconds: float) -> dict[str, Any]:
    """Where py-spy's samples (on-CPU only) went: by owner of the leaf frame, by function, inclusive."""
    self_fn: Counter[str] = Counter()
    self_pkg: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    total = 0
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            total += count
            names = []
            for frame in stack.split(";"):
                m = _FRAME.match(frame)
                func, file = (m.group("func"), m.group("file")) if m else (frame, "")
                names.append((f"{func} [{_package(file)}]", _package(file), file))
            leaf = names[-1]
            self_fn[leaf[0]] += count
            self_pkg[leaf[1]] += count
            for name in {n[0] for n in names if n[2].startswith(str(ROOT) + "/") and "/.venv/" not in n[2]}:
                incl_fn[name] += count

    def share(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(name, round(100 * c / max(total, 1), 1)) for name, c in counter.most_common(n)]

    processes = len(paths)
    return {
        "files": [str(p) for p in paths],
        "samples": total,
        # py-spy samples threads that are running or waiting for a CPU (state R), at 100 Hz: on a busy
        # machine this is more than the CPU time the process got; the CPU meters give that.
        # ``seconds`` is summed over the recorders, so the mean per process is seconds / processes.
        "active_cores": round(total * processes / max(seconds * 100, 1), 2),
        "by_owner": share(self_pkg, 12),
        "top_self": share(self_fn, 15),
        "project_inclusive": share(incl_fn, 15),
    }
