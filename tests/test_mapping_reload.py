"""A running worker follows its MAPPING_FILE: a good change is live within 10 s, a bad one is refused
(an ERROR line, a metric) while the previous mapping keeps running; unmapped fields are counted."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import redis

from devkit import samples
from devkit.procs import ROOT, wait_for
from shared import deadletter, keys, metrics, status
from shared.records import InboxRecord
from shared.settings import Settings
from tests.helpers import Pipeline, SandboxClient
from worker import mapfile, unmapped

DEFAULT = (ROOT / "worker" / "mappings" / "default-Email.yaml").read_text()
V1 = DEFAULT.replace("fields:\n", 'fields:\n  _{tenant}.survey.answer: "${Survey Answer}"\n', 1)
V2 = DEFAULT.replace("fields:\n", "fields:\n  _{tenant}.survey.reply: upper(${Survey Answer})\n", 1)
BROKEN = V2.replace("upper(", "uper(")


def push(client: redis.Redis, **extra: Any) -> dict[str, Any]:
    """Queue one push, as the receiver stores it; return it."""
    body = {**samples.push(), "Survey Answer": "yes", **extra}
    client.xadd(keys.INBOX, InboxRecord(json.dumps(body), "t").fields())
    return body


def survey_of(sandbox: SandboxClient, transmission_id: str) -> dict[str, Any] | None:
    """The tenant's survey object of the event AEP got for a push, or None before it arrived."""
    for event in sandbox.events():
        if event["transmissionId"] == transmission_id:
            survey: dict[str, Any] = event["message"]["body"]["xdmEntity"]["_acme"].get("survey", {})
            return survey
    return None


def test_a_worker_reloads_a_changed_mapping_and_refuses_a_broken_one(
    settings: Settings, redis_client: redis.Redis, sandbox: SandboxClient, tmp_path: Path
) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(V1)
    digests = {text: mapfile.loads(text).digest for text in (V1, V2)}
    pipeline = Pipeline(dataclasses.replace(settings, mapping_file=str(path)), tmp_path)
    pipeline.start_worker()
    try:
        # The file's own mapping runs: the extra field arrives at AEP.
        first = push(redis_client)
        assert wait_for(lambda: survey_of(sandbox, first["transmissionId"]), timeout=30) == {"answer": "yes"}
        running = status.collect(redis_client)["mappings"]
        assert list(running) == [digests[V1]] and running[digests[V1]]["source"] == str(path)

        # A changed file is live within 10 s, in every process of the worker.
        path.write_text(V2)
        changed = time.monotonic()
        mapped_by_v2 = None
        while mapped_by_v2 is None and time.monotonic() - changed < 30:
            sent = push(redis_client)
            sent_at = time.monotonic()
            tid = sent["transmissionId"]
            survey = wait_for(lambda tid=tid: survey_of(sandbox, tid), timeout=30)
            if survey == {"reply": "YES"}:
                mapped_by_v2 = sent_at - changed
            time.sleep(0.3)
        assert mapped_by_v2 is not None and mapped_by_v2 < 10, mapped_by_v2
        wait_for(lambda: list(status.collect(redis_client)["mappings"]) == [digests[V2]], timeout=15)

        # A dead letter names the mapping in force.
        push(redis_client, timestamp="never")
        letters = wait_for(lambda: deadletter.read_all(redis_client), timeout=30)
        assert [letter.mapping for letter in letters] == [digests[V2]]

        # A broken file is refused, loudly, and the previous mapping keeps running.
        path.write_text(BROKEN)
        wait_for(lambda: "refused, still running" in pipeline.logs(), timeout=15, what="the refusal")
        assert f"mapping {path} refused, still running {digests[V2]}: {path}" in pipeline.logs()
        assert "unknown function 'uper'" in pipeline.logs()
        wait_for(
            lambda: (
                'rainbridge_mapping_reloads_total{outcome="refused"}' in metrics.render(redis_client).decode()
            ),
            timeout=15,
            what="the refusal metric",
        )
        after = push(redis_client)
        assert wait_for(lambda: survey_of(sandbox, after["transmissionId"]), timeout=30) == {"reply": "YES"}
        assert list(status.collect(redis_client)["mappings"]) == [digests[V2]]
    finally:
        pipeline.stop()


def test_fields_no_entry_reads_are_counted_by_path_never_by_value(
    pipeline: Pipeline, redis_client: redis.Redis, sandbox: SandboxClient
) -> None:
    for n in range(3):
        push(redis_client, badge={"color": f"secret-{n}"}, surveyScore=n)
    sandbox.wait_for_events(3)
    rows = wait_for(
        lambda: (found := unmapped.read(redis_client)[0]) and len(found) == 3 and found, timeout=15
    )
    assert {(row.path, row.count) for row in rows} == {
        ("Survey Answer", 3),
        ("badge.color", 3),
        ("surveyScore", 3),
    }
    stored = json.dumps(redis_client.hgetall(keys.UNMAPPED)) + json.dumps(
        redis_client.hgetall(keys.UNMAPPED_LAST)
    )
    assert "secret" not in stored
    assert status.collect(redis_client)["unmapped_paths"] == 3
    assert "rainbridge_unmapped_paths 3.0" in metrics.render(redis_client).decode()


def test_reports_of_processes_long_gone_are_forgotten(redis_client: redis.Redis) -> None:
    now = int(time.time() * 1000)
    redis_client.hset(keys.MAPPINGS, "host:1", f"abc {now} default")
    redis_client.hset(keys.MAPPINGS, "host:2", f"abc {now - 2 * 3600 * 1000} default")
    assert mapfile.forget_gone(redis_client) == 1
    assert list(redis_client.hgetall(keys.MAPPINGS)) == ["host:1"]
