"""From an empty AEP to delivered events, as an operator goes: ``aep setup``, the pipeline, a mapping change.

The sandbox validates every event against the schema ``aep setup`` registered there, so a mapping
that writes a field the schema lacks is refused by "AEP" until ``aep setup`` adds it.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable
from pathlib import Path

import redis
from flask import Flask

from devkit import samples
from devkit.local import setup_lines
from devkit.procs import BIN, ROOT, wait_for
from shared import deadletter, keys
from shared.settings import Settings
from tests.helpers import TOKEN, Pipeline, SandboxClient, to_env
from worker import mapfile

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SET_UP_BY_AEP = {"aep_schema_id": None, "aep_dataset_id": None, "aep_tenant_id": None, "aep_flow_id": None}


def rainbridge(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``rainbridge`` command, run as an operator runs it, with ``settings`` as its environment."""
    return subprocess.run(
        [str(BIN / "rainbridge"), *args],
        env=to_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_setup_then_delivery_then_a_field_the_schema_lacks_is_refused_until_setup_adds_it(
    settings: Settings,
    sandbox: SandboxClient,
    redis_client: redis.Redis,
    make_app: Callable[[Settings], Flask],
    tmp_path: Path,
) -> None:
    mapping_file = tmp_path / "mapping.yaml"
    mapping_file.write_text(mapfile.default_text("Email"))
    fresh = dataclasses.replace(settings, mapping_file=str(mapping_file), **SET_UP_BY_AEP)

    # Given AEP set up by `aep setup --apply`, and its lines put in the environment
    made = rainbridge(fresh, "aep", "setup", "--apply")
    assert made.returncode == 0, made.stdout + made.stderr
    lines = setup_lines(made.stdout)
    live = dataclasses.replace(
        fresh,
        aep_streaming_url=lines["AEP_STREAMING_URL"],
        aep_flow_id=lines["AEP_FLOW_ID"],
        aep_dataset_id=lines["AEP_DATASET_ID"],
        aep_schema_id=lines["AEP_SCHEMA_ID"],
        aep_tenant_id=lines["AEP_TENANT_ID"],
    )
    check = rainbridge(live, "check")
    assert "ok    schema" in check.stdout, check.stdout

    pipeline = Pipeline(live, tmp_path)
    pipeline.start_worker()
    try:
        receiver = make_app(live).test_client()

        # When pushes are posted, then the validating sandbox accepts every one
        first = [samples.push() for _ in range(5)]
        for push in first:
            assert receiver.post("/v1/pushes", json=push, headers=AUTH).status_code == 202
        events = sandbox.wait_for_events(5)
        assert sorted(e["transmissionId"] for e in events) == sorted(p["transmissionId"] for p in first)
        # (`check` knocked with an empty batch, which AEP answers 400; the rest are the pipeline's)
        sent = [r for r in sandbox.requests() if r["path"].startswith("/collection/batch/") and r["messages"]]
        assert sent and all(r["status"] == 207 for r in sent)

        # When the mapping writes a field the schema lacks
        mapping_file.write_text(
            mapfile.default_text("Email").replace(
                "  _{tenant}.session.title: session.title\n",
                "  _{tenant}.session.title: session.title\n  _{tenant}.session.track: upper(session.code)\n",
            )
        )
        changed = mapfile.load(str(mapping_file)).digest
        # then check names it
        check = rainbridge(live, "check")
        assert check.returncode == 1
        assert "FAIL  schema: the schema lacks _acme.session.track, which the mapping writes" in check.stdout
        # and once the worker runs it, AEP refuses each event, which is dead-lettered with AEP's words
        wait_for(
            lambda: any(v.startswith(changed) for v in redis_client.hvals(keys.MAPPINGS)),
            timeout=20,
            what="the worker to run the changed mapping",
        )
        second = [samples.push() for _ in range(5)]
        for push in second:
            assert receiver.post("/v1/pushes", json=push, headers=AUTH).status_code == 202
        letters = wait_for(
            lambda: (found := deadletter.read_all(redis_client)) and len(found) >= 5 and found,
            timeout=30,
            what="5 dead letters",
        )
        assert sorted(letter.transmission_id or "" for letter in letters) == sorted(
            p["transmissionId"] for p in second
        )
        for letter in letters:
            assert letter.reason == deadletter.Reason.AEP_REJECTED
            assert "#/_acme/session" in letter.detail and "track" in letter.detail
            assert letter.mapping == changed
        assert len(sandbox.events()) == 5

        # When `aep setup --apply` runs again, it adds the field to the field group
        again = rainbridge(live, "aep", "setup", "--apply")
        assert again.returncode == 0, again.stdout
        assert "updated        field group 'rainbridge RainFocus fields': add track" in again.stdout
        assert rainbridge(live, "check").returncode == 0

        # and a replay delivers what was refused, with the new field
        replay = rainbridge(live, "dlq", "replay", "--all")
        assert replay.returncode == 0, replay.stdout + replay.stderr
        events = sandbox.wait_for_events(10)
        assert sorted(e["transmissionId"] for e in events) == sorted(
            p["transmissionId"] for p in first + second
        )
        replayed = [e for e in events if e["transmissionId"] in {p["transmissionId"] for p in second}]
        assert all(e["message"]["body"]["xdmEntity"]["_acme"]["session"]["track"] == "GS3" for e in replayed)
        wait_for(lambda: not deadletter.read_all(redis_client), timeout=10, what="the dead letters to go")
    finally:
        pipeline.stop()
