"""The benchmark's hand-written-table worker makes exactly the messages the real worker makes."""

from __future__ import annotations

import json
import subprocess
import sys

from devkit import samples
from devkit.procs import ROOT
from shared.settings import Settings
from tests.helpers import to_env

PROBE = """
import json, sys
import devkit.bench_table  # the table in place of the mapping, as the benchmark's worker runs
from shared.settings import Settings
from worker import ingest, streams
settings = Settings.from_env()
for line in sys.stdin:
    print(ingest.prepare(streams.Entry("1-0", {"push": line.strip()}), settings).record.message)
"""


def test_the_table_worker_sends_what_the_mapping_sends(settings: Settings) -> None:
    from worker import ingest, streams  # noqa: PLC0415 - the real mapping, in this process

    pushes = [json.dumps(p) for p in (samples.summit(), samples.push(), samples.summit(lead=None))]
    result = subprocess.run(
        [sys.executable, "-c", PROBE], input="\n".join(pushes), env=to_env(settings), cwd=ROOT,
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    table = result.stdout.splitlines()
    mapped = [ingest.prepare(streams.Entry("1-0", {"push": p}), settings).record.message for p in pushes]  # type: ignore[union-attr]
    assert [json.loads(m) for m in table] == [json.loads(m) for m in mapped]
