"""Dead-letter tooling with a real Redis: list, show, replay (dry run, atomic move, dedupe bypass), purge."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import redis
import requests

from devkit import samples
from devkit.procs import wait_for
from ops import cli
from ops import dlq as dlq_cli
from shared import deadletter, keys
from shared.deadletter import DeadLetter
from shared.settings import Settings
from tests.helpers import TOKEN, SandboxClient, to_env
from worker import aep, deliver, ingest, replay
from worker.ims import TokenCache

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment the CLI reads its settings from: the test's settings."""
    for name in list(os.environ):
        if name.startswith(("AEP_", "RECEIVER_", "REDIS_")):
            monkeypatch.delenv(name)
    for name, value in to_env(settings).items():
        monkeypatch.setenv(name, value)


def run_cli(*argv: str) -> int:
    """``rainbridge <argv>``, through the real entry point."""
    return cli.main(list(argv))


def add_push(client: redis.Redis, push: dict[str, Any]) -> None:
    client.xadd(keys.INBOX, {"push": json.dumps(push), "receipt": "r1"})


def invalid(event_type: str = "SessionScheduled", **overrides: Any) -> dict[str, Any]:
    push = samples.push(eventType=event_type, **overrides)
    del push["attendee"]["email"]
    return push


def ingested(client: redis.Redis, settings: Settings, *pushes: dict[str, Any]) -> list[DeadLetter]:
    """Run pushes through the real ingest stage; return the dead letters it wrote, oldest first."""
    before = {letter.id for letter in deadletter.read_all(client)}
    for push in pushes:
        add_push(client, push)
    ingest.drain(client, settings, "c1", budget_s=0.2)
    return [letter for letter in deadletter.read_all(client) if letter.id not in before]


def broken_mapping(client: redis.Redis, settings: Settings, *pushes: dict[str, Any]) -> list[DeadLetter]:
    """Dead letters of valid pushes, written by an ingest that could not build XDM (a bug, since fixed)."""
    letters = ingested(client, dataclasses.replace(settings, aep_tenant_id=None), *pushes)
    assert [letter.reason for letter in letters] == [deadletter.Reason.INTERNAL_ERROR] * len(pushes)
    return letters


def aep_rejected(
    client: redis.Redis, settings: Settings, sandbox: SandboxClient, push: dict[str, Any]
) -> DeadLetter:
    """Run a valid push through ingest (claiming its transmissionId) and delivery to a refusing AEP."""
    sandbox.faults(reject_ids=[push["transmissionId"]])
    add_push(client, push)
    assert ingest.drain(client, settings, "c1", budget_s=0.2).sent == 1
    with requests.Session() as session:
        inlet = aep.AepClient(settings, TokenCache(client, settings, session), session)
        wait_for(
            lambda: deliver.run(client, settings, "d1", inlet, budget_s=0.5).rejected,
            what="AEP to refuse the push",
        )
    sandbox.faults(reject_ids=[])
    letter = deadletter.read_all(client)[-1]
    assert letter.reason == deadletter.Reason.AEP_REJECTED
    return letter


def entries(client: redis.Redis, stream: str = keys.INBOX) -> list[tuple[str, dict[str, str]]]:
    return cast(list[tuple[str, dict[str, str]]], client.xrange(stream))


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


@pytest.mark.usefixtures("cli_env")
def test_list_prints_a_table_of_dead_letters_oldest_first(
    redis_client: redis.Redis, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    letters = ingested(redis_client, settings, invalid(), invalid("Badge\x1b[31mScan"))

    assert run_cli("dlq", "list") == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["ID", "DEAD-LETTERED"]
    assert [line.split()[0] for line in lines[1:3]] == [letter.id for letter in letters]
    assert "invalid_payload" in lines[1]
    assert letters[0].transmission_id in lines[1]
    assert "attendee.email: Missing data for required field." in lines[1]
    # A sender's control characters are shown escaped, never sent raw to the terminal.
    assert "Badge\\u001b[31mScan" in lines[2]
    assert "\x1b" not in "".join(lines)
    assert lines[-1] == "2 dead letter(s)"


@pytest.mark.usefixtures("cli_env")
def test_list_filters_combine_and_json_prints_one_object_per_line(
    redis_client: redis.Redis,
    settings: Settings,
    sandbox: SandboxClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scheduled, attended = ingested(redis_client, settings, invalid(), invalid("SessionAttended"))
    rejected = aep_rejected(redis_client, settings, sandbox, samples.push())

    def listed(*options: str) -> list[dict[str, Any]]:
        assert run_cli("dlq", "list", "--json", *options) == 0
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    assert [d["id"] for d in listed()] == [scheduled.id, attended.id, rejected.id]
    assert [d["id"] for d in listed("--reason", "invalid_payload")] == [scheduled.id, attended.id]
    assert [d["id"] for d in listed("--event-type", "SessionScheduled")] == [scheduled.id, rejected.id]
    both = listed("--reason", "invalid_payload", "--event-type", "SessionScheduled")
    assert [d["id"] for d in both] == [scheduled.id]
    assert [d["id"] for d in listed("--limit", "2")] == [scheduled.id, attended.id]

    (first,) = both
    assert first["reason"] == "invalid_payload"
    assert first["detail"] == {"attendee.email": ["Missing data for required field."]}
    assert first["transmissionId"] == scheduled.transmission_id
    assert first["eventType"] == "SessionScheduled"
    assert first["attempts"] == 0
    assert first["push"] == json.loads(scheduled.push)
    assert first["xdm"] is None
    assert first["deadletteredAt"] == dlq_cli.as_json(scheduled)["deadletteredAt"]
    assert datetime.fromisoformat(first["deadletteredAt"]).timestamp() * 1000 == scheduled.deadlettered_ms
    assert datetime.fromisoformat(first["receivedAt"]).timestamp() * 1000 == scheduled.received_ms
    (last,) = listed("--reason", "aep_rejected")
    assert last["detail"].startswith("AEP refused the message (400): ")
    assert "Message rejected by the sandbox" in last["detail"]
    assert last["attempts"] == 1
    assert last["xdm"]["body"]["xdmEntity"]["_acme"]["transmissionId"] == rejected.transmission_id


@pytest.mark.usefixtures("cli_env")
def test_since_takes_an_iso_date_or_date_time_naive_meaning_utc(
    redis_client: redis.Redis, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    (older,) = ingested(redis_client, settings, invalid())
    time.sleep(0.01)
    (newer,) = ingested(redis_client, settings, invalid())
    capsys.readouterr()

    def listed(since: str) -> list[str]:
        assert run_cli("dlq", "list", "--json", "--since", since) == 0
        return [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]

    assert listed(iso(newer.deadlettered_ms)) == [newer.id]
    assert listed(iso(newer.deadlettered_ms).removesuffix("+00:00")) == [newer.id]
    assert listed(iso(newer.deadlettered_ms).replace("+00:00", "Z")) == [newer.id]
    assert listed("2000-01-01") == [older.id, newer.id]
    assert listed((datetime.now(UTC) + timedelta(days=1)).date().isoformat()) == []

    with pytest.raises(SystemExit) as exit_info:
        run_cli("dlq", "list", "--since", "last tuesday")
    assert exit_info.value.code == 2
    assert "argument --since: not an ISO 8601 date or date-time: 'last tuesday'" in capsys.readouterr().err


def test_select_by_ids_leaves_out_unknown_ones_and_still_applies_filters(
    redis_client: redis.Redis, settings: Settings
) -> None:
    first, second = ingested(redis_client, settings, invalid(), invalid("SessionAttended"))

    assert replay.select(redis_client, ids=[second.id, "1-0", first.id]) == [first, second]
    assert replay.select(redis_client, ids=[first.id, second.id], event_type="SessionAttended") == [second]
    assert replay.select(redis_client, since_ms=second.deadlettered_ms + 1) == []
    with pytest.raises(ValueError, match="not a dead-letter id"):
        replay.select(redis_client, ids=["12345"])


@pytest.mark.usefixtures("cli_env")
def test_show_prints_everything_in_a_dead_letter(
    redis_client: redis.Redis,
    settings: Settings,
    sandbox: SandboxClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    letter = aep_rejected(redis_client, settings, sandbox, samples.push())

    assert run_cli("dlq", "show", letter.id) == 0

    out = capsys.readouterr().out
    assert f"id:             {letter.id}" in out
    assert "reason:         aep_rejected" in out
    assert f"dead-lettered:  {dlq_cli.as_json(letter)['deadletteredAt']}" in out
    assert f"received:       {dlq_cli.as_json(letter)['receivedAt']}" in out
    assert f"transmissionId: {letter.transmission_id}" in out
    assert "attempts:       1" in out
    push_text = out.split("\npush:\n", 1)[1].split("\nxdm:\n", 1)[0]
    assert json.loads(push_text) == json.loads(letter.push)
    assert '\n    "transmissionId": ' in push_text  # indented
    assert json.loads(out.split("\nxdm:\n", 1)[1]) == json.loads(letter.xdm)


@pytest.mark.usefixtures("cli_env")
def test_show_of_an_unknown_id_says_so_and_fails(
    redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("dlq", "show", "1700000000000-0") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no dead letter with id 1700000000000-0" in captured.err


@pytest.mark.usefixtures("cli_env")
def test_a_dry_run_reports_what_would_still_fail_and_touches_nothing(
    redis_client: redis.Redis, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    (fixed,) = broken_mapping(redis_client, settings, samples.push())
    (still_bad,) = ingested(redis_client, settings, samples.push(timestamp="yesterday"))
    stream_before = redis_client.xrange(keys.DEADLETTER)

    assert run_cli("dlq", "replay", "--all", "--dry-run") == 1

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{fixed.id}  {fixed.transmission_id}  would replay"
    assert lines[1].startswith(
        f"{still_bad.id}  {still_bad.transmission_id}  would still fail validation (invalid_payload): "
        "timestamp: Not a valid date-time"
    )
    assert lines[2] == (
        "dry run: 1 would replay, 1 would still fail validation and be skipped (--force replays them); "
        "nothing was changed"
    )
    assert redis_client.xrange(keys.DEADLETTER) == stream_before
    assert entries(redis_client) == []


@pytest.mark.usefixtures("cli_env")
def test_replay_moves_the_push_back_to_the_inbox_and_removes_the_letter_in_one_step(
    redis_client: redis.Redis, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    (fixed,) = broken_mapping(redis_client, settings, samples.push())
    (still_bad,) = ingested(redis_client, settings, samples.push(timestamp="yesterday"))

    assert run_cli("dlq", "replay", fixed.id, still_bad.id) == 1  # one was skipped

    out = capsys.readouterr().out.splitlines()
    ((inbox_id, fields),) = entries(redis_client)
    assert out[0] == f"{fixed.id}  {fixed.transmission_id}  replayed as inbox entry {inbox_id}"
    assert out[1].startswith(f"{still_bad.id}  {still_bad.transmission_id}  skipped: still fails validation")
    assert out[2] == "replayed 1, skipped 1 that still fail validation (--force replays them anyway)"
    assert fields == {
        "push": fixed.push,
        "receipt": f"replay-{fixed.id}",
        "replay": "1",
        "receivedMs": str(fixed.received_ms),
    }
    assert deadletter.read_all(redis_client) == [still_bad]

    # Replaying the same letter again (a stale listing, a second operator) adds nothing.
    (again,) = replay.replay(redis_client, settings, [fixed], dry_run=False, rate=None)
    assert again.status == "gone"
    assert len(entries(redis_client)) == 1

    # The fixed transformation now applies; the original receive time is kept.
    assert ingest.drain(redis_client, settings, "c1", budget_s=0.2).sent == 1
    ((_, message),) = entries(redis_client, keys.OUTBOX)
    assert message["receivedMs"] == str(fixed.received_ms)
    assert json.loads(message["message"])["body"]["xdmEntity"]["_acme"]["transmissionId"] == (
        fixed.transmission_id
    )


def test_a_forced_replay_of_a_still_invalid_push_is_dead_lettered_again(
    redis_client: redis.Redis, settings: Settings
) -> None:
    (letter,) = ingested(redis_client, settings, samples.push(timestamp="yesterday"))

    (result,) = replay.replay(redis_client, settings, [letter], dry_run=False, rate=None, force=True)

    assert result.status == "replayed"
    assert result.failure == deadletter.Reason.INVALID_PAYLOAD
    assert "timestamp" in result.failure_detail
    (again,) = ingested(redis_client, settings)
    assert again.id != letter.id
    assert (again.push, again.reason, again.received_ms) == (letter.push, letter.reason, letter.received_ms)


def test_a_replayed_push_passes_dedupe_once_and_a_later_repeat_is_dropped(
    redis_client: redis.Redis, settings: Settings, sandbox: SandboxClient
) -> None:
    push = samples.push()
    letter = aep_rejected(redis_client, settings, sandbox, push)

    (result,) = replay.replay(redis_client, settings, [letter], dry_run=False, rate=None)
    assert result.status == "replayed"
    assert ingest.drain(redis_client, settings, "c1", budget_s=0.2).sent == 1

    add_push(redis_client, push)
    summary = ingest.drain(redis_client, settings, "c1", budget_s=0.2)
    assert (summary.sent, summary.repeats) == (0, 1)


def test_rate_spaces_replays_out(redis_client: redis.Redis, settings: Settings) -> None:
    letters = broken_mapping(redis_client, settings, samples.push(), samples.push(), samples.push())

    started = time.monotonic()
    results = replay.replay(redis_client, settings, letters, dry_run=False, rate=20)

    assert time.monotonic() - started >= 2 / 20
    assert [r.status for r in results] == ["replayed"] * 3
    assert [json.loads(fields["push"]) for _, fields in entries(redis_client)] == [
        json.loads(letter.push) for letter in letters
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay"], "nothing selected: name dead-letter ids"),
        (["replay", "--dry-run"], "or pass --all"),
        (["purge", "--yes"], "nothing selected"),
        (["replay", "1700000000000-0", "--reason", "aep_rejected"], "not both"),
        (["purge", "--all", "--event-type", "SessionScheduled"], "--all selects every dead letter"),
    ],
)
@pytest.mark.usefixtures("cli_env")
def test_replay_and_purge_refuse_an_unclear_selection(
    redis_client: redis.Redis,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    ingested(redis_client, settings, invalid())

    assert run_cli("dlq", *argv) == 2

    assert message in capsys.readouterr().err
    assert len(deadletter.read_all(redis_client)) == 1


@pytest.mark.usefixtures("cli_env")
def test_purge_shows_what_it_would_delete_until_told_yes(
    redis_client: redis.Redis,
    settings: Settings,
    sandbox: SandboxClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first, second = ingested(redis_client, settings, invalid(), invalid("SessionAttended"))
    rejected = aep_rejected(redis_client, settings, sandbox, samples.push())

    assert run_cli("dlq", "purge", "--reason", "invalid_payload") == 2
    out = capsys.readouterr().out
    assert first.id in out and second.id in out and rejected.id not in out
    assert "would purge 2 dead letter(s); nothing was deleted: add --yes" in out
    assert len(deadletter.read_all(redis_client)) == 3

    assert run_cli("dlq", "purge", first.id, "--yes") == 0
    assert capsys.readouterr().out == "purged 1 dead letter(s)\n"
    assert deadletter.read_all(redis_client) == [second, rejected]

    assert run_cli("dlq", "purge", first.id, second.id, "--yes") == 1  # one of them is unknown now
    captured = capsys.readouterr()
    assert captured.out == "purged 1 dead letter(s)\n"
    assert f"no dead letter with id {first.id}" in captured.err

    assert run_cli("dlq", "purge", "--all", "--yes") == 0
    assert deadletter.read_all(redis_client) == []
    assert replay.purge(redis_client, [rejected.id]) == 0


@pytest.mark.usefixtures("pipeline", "cli_env")
def test_replay_after_aep_rejected_it_reaches_aep_once_and_a_later_repeat_is_dropped(
    receiver_url: str,
    sandbox: SandboxClient,
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a push AEP refused: it was dead-lettered after its transmissionId was claimed by dedupe
    push = samples.push()
    tid = push["transmissionId"]
    sandbox.faults(reject_ids=[tid])
    with requests.Session() as http:
        assert http.post(f"{receiver_url}/v1/pushes", json=push, headers=AUTH, timeout=10).status_code == 202
        (letter,) = wait_for(
            lambda: replay.select(redis_client, reason=deadletter.Reason.AEP_REJECTED), what="the dead letter"
        )
        assert letter.transmission_id == tid
        assert json.loads(letter.push) == push
        assert sandbox.events() == []

        # When AEP takes it again and the operator replays it
        sandbox.faults(reject_ids=[])
        assert run_cli("dlq", "replay", letter.id) == 0
        assert "replayed 1" in capsys.readouterr().out

        # Then it arrives once, and the dead letter is gone
        (event,) = sandbox.wait_for_events(1)
        assert event["transmissionId"] == tid
        assert deadletter.read_all(redis_client) == []

        # And RainFocus sending it again afterwards is dropped as a repeat
        assert http.post(f"{receiver_url}/v1/pushes", json=push, headers=AUTH, timeout=10).status_code == 202
    wait_for(
        lambda: redis_client.xlen(keys.INBOX) == 0 and redis_client.xlen(keys.OUTBOX) == 0,
        what="the pipeline to drain",
    )
    time.sleep(1.5)  # anything sent twice would show up now
    assert [e["transmissionId"] for e in sandbox.events()] == [tid]
    assert deadletter.read_all(redis_client) == []
