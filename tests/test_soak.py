"""The soak run, shortened: 30 s of pushes under frequent random faults, then the ledger verdict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from devkit.procs import ROOT


def test_a_short_soak_with_faults_ends_with_nothing_missing(tmp_path: Path) -> None:
    report_path = tmp_path / "soak.json"
    args = [sys.executable, "-m", "devkit.soak", "--minutes", "0.5", "--rate", "40", "--workers", "2"]
    # A fixed seed and a fault every ~4 s: each kind of fault comes up in the first half-minute.
    args += ["--seed", "7", "--fault-every", "4", "--drain-timeout", "60", "--report", str(report_path)]
    run = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=150, check=False)

    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "PASS" in output
    report = json.loads(report_path.read_text())
    verdict = report["verdict"]
    assert verdict["missing"] == [], output
    assert verdict["conflicting_ids"] == [], output
    assert verdict["acknowledged"] > 500, output
    assert verdict["acknowledged"] == (
        verdict["delivered"] + sum(verdict["dead_by_reason"].values()) + len(verdict["lost_to_redis_kill"])
    ), output
    assert sum(report["faults"].values()) >= 4, output
