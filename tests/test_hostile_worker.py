"""Whatever JSON object the receiver takes, ingest makes it a valid XDM event or a dead letter.

``prepare`` is the stage that sees hostile input first: it must answer for any object with a Ready
message that AEP will take, or a Rejected with a reason and detail, and never raise (an exception
would send the entry round again and again). The last test drives the receiver and the ingest
stage together, so "whatever the receiver accepted" is taken literally.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

import hypothesis
import redis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, assume, given
from hypothesis import strategies as st

from devkit import samples
from receiver.body import MAX_DEPTH, MAX_NUMBER_CHARS
from shared import deadletter, keys
from shared.push import GROUPS, MAX_STRING_LENGTH, PUSH_FIELDS
from shared.settings import Settings
from tests.helpers import TOKEN
from tests.strategies import any_json
from worker import ingest, streams
from worker.dedupe import Ready, Rejected
from worker.transform import MAX_EVENT_BYTES

XDM = Settings(
    aep_streaming_url="http://127.0.0.1:9/collection/inlet",
    aep_org_id="0123456789ABCDEF01234567@AdobeOrg",
    aep_dataset_id="5f0c0c0c0c0c0c0c0c0c0c0c",
    aep_schema_id="https://ns.adobe.com/acme/schemas/0123456789abcdef",
    aep_tenant_id="acme",
)
HASHED = dataclasses.replace(XDM, identity_namespace="Email_LC_SHA256")
RAW = dataclasses.replace(XDM, aep_payload_mode="raw")

#: Reasons a push of the sender's own making may be dead-lettered for; internal_error means a bug.
SENDER_REASONS = {deadletter.Reason.INVALID_PAYLOAD, deadletter.Reason.EVENT_TOO_LARGE}
XDM_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")

EXAMPLES = hypothesis.settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_values = any_json(max_int=10**40, max_text=40, max_key=12, max_leaves=12)
# Values chosen to sit on the edges of the push's rules: lengths, ranges, formats, blanks.
edge_values = st.sampled_from(
    [
        "",
        "   ",
        "x" * MAX_STRING_LENGTH,
        "x" * (MAX_STRING_LENGTH + 1),
        "é" * 3000,
        "90",
        " 90 ",
        "٩٠",  # Arabic-Indic digits: int() takes them, the push's integers must not
        "-1",
        str(2**31),
        2**31,
        -(2**31) - 1,
        90.0,
        True,
        "2023-04-01T00:41:57.000Z",
        "2023-04-01T00:41:57",
        "2999-01-01T00:00:00Z",
        "0001-01-01T00:00:00+23:59",
        "9999-12-31T23:59:59-23:59",
        "2023-02-30T00:00:00Z",
        "User@Example.COM",
        "not an email",
        "a@b@c",
        "\x00",
        "9" * MAX_NUMBER_CHARS,
        {},
        [],
    ]
)
field_values = edge_values | json_values | st.text(min_size=3000, max_size=6000)
paths = st.sampled_from(sorted(PUSH_FIELDS))


@st.composite
def mutated_pushes(draw: st.DrawFn) -> dict[str, Any]:
    """A realistic push with a few fields set, removed, duplicated or replaced, and extra keys."""
    push = samples.push()
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        how = draw(st.sampled_from(["nested", "dotted", "delete", "group", "extra"]))
        path = draw(paths)
        group, _, name = path.rpartition(".")
        if how == "nested" and group and isinstance(push.get(group), dict):
            push[group][name] = draw(field_values)
        elif how in {"nested", "dotted"}:
            push[path] = draw(field_values)
        elif how == "delete":
            push.pop(path, None)
            if group and isinstance(push.get(group), dict):
                push[group].pop(name, None)
        elif how == "group":
            push[draw(st.sampled_from(GROUPS))] = draw(field_values)
        else:
            push[draw(st.text(max_size=30))] = draw(field_values)
    return push


any_objects = st.dictionaries(
    st.sampled_from(sorted(PUSH_FIELDS)) | st.sampled_from(GROUPS) | st.text(max_size=20),
    edge_values | json_values,
    max_size=10,
)


def prepare(push: Any, settings: Settings) -> tuple[str, Ready | Rejected]:
    """``push`` as the receiver stores it, through the ingest stage."""
    push_json = json.dumps(push, ensure_ascii=False)
    return push_json, ingest.prepare(streams.Entry(id="1-0", fields={"push": push_json}), settings)


def assert_sound(push_json: str, result: Ready | Rejected, settings: Settings) -> None:
    """A Ready AEP will take, or a Rejected with a sender's reason; storable in Redis either way."""
    assert result.entry_id == "1-0"
    record = result.record if isinstance(result, Ready) else result.letter
    assert record.push == push_json  # the original is kept as it came, for replay
    for value in (result.entry_id, *record.values()):
        value.encode("utf-8")  # Redis takes it
    if isinstance(result, Rejected):
        assert result.reason in SENDER_REASONS, result.detail
        assert result.detail
        assert json.loads(result.detail)
        return
    sent = result.record
    assert sent.transmission_id and sent.event_type
    if settings.aep_payload_mode == "raw":
        assert sent.message == push_json
        return
    message = json.loads(sent.message)
    assert message["header"]["datasetId"] == settings.aep_dataset_id
    event = message["body"]["xdmEntity"]
    assert event["_id"] == hashlib.sha256(sent.transmission_id.encode()).hexdigest()
    assert XDM_TIME.fullmatch(event["timestamp"])
    assert event["eventType"] == sent.event_type
    ((namespace, (identity,)),) = event["identityMap"].items()
    assert namespace == settings.identity_namespace
    assert identity["primary"] is True and identity["id"]
    encoded = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
    assert len(encoded) <= MAX_EVENT_BYTES
    assert all(len(text) <= MAX_STRING_LENGTH for text in strings_in(event))


def depth(value: Any) -> int:
    """How deep ``value`` nests: 0 for a scalar, 1 for a flat array or object."""
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


def strings_in(value: Any) -> list[str]:
    """Every string inside ``value``, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in [key, *strings_in(item)]]
    if isinstance(value, list):
        return [text for item in value for text in strings_in(item)]
    return []


@EXAMPLES
@given(push=mutated_pushes(), mode=st.sampled_from([XDM, HASHED, RAW]))
def test_a_mutated_sample_push_becomes_xdm_or_a_dead_letter(push: dict[str, Any], mode: Settings) -> None:
    push_json, result = prepare(push, mode)
    hypothesis.event(type(result).__name__ + (f" {result.reason}" if isinstance(result, Rejected) else ""))
    assert_sound(push_json, result, mode)


@EXAMPLES
@given(raw=any_objects, mode=st.sampled_from([XDM, RAW]))
def test_any_json_object_becomes_xdm_or_a_dead_letter(raw: dict[str, Any], mode: Settings) -> None:
    push_json, result = prepare(raw, mode)
    assert_sound(push_json, result, mode)


@EXAMPLES
@given(extra=json_values, name=st.text(max_size=20))
def test_unknown_fields_of_any_shape_do_not_change_the_event(extra: Any, name: str) -> None:
    push = samples.push()
    if name in push or name in PUSH_FIELDS:
        return
    _, plain = prepare(push, XDM)
    push_json, result = prepare({**push, name: extra}, XDM)
    assert_sound(push_json, result, XDM)
    assert isinstance(plain, Ready) and isinstance(result, Ready)
    assert json.loads(result.record.message) == json.loads(plain.record.message)


def test_a_one_megabyte_lead_note_is_dead_lettered_as_invalid_without_being_echoed() -> None:
    push_json, result = prepare(samples.push(lead={"note": "n" * 1_000_000}), XDM)
    assert isinstance(result, Rejected)
    assert result.reason == deadletter.Reason.INVALID_PAYLOAD
    assert "lead.note" in json.loads(result.detail)
    assert len(result.detail) < 500  # the reason, not the note
    assert_sound(push_json, result, XDM)


def test_a_push_too_big_for_aep_profile_is_dead_lettered_as_too_large() -> None:
    # Every field within its own limit, the event over AEP Profile's 10 KB.
    note = "n" * MAX_STRING_LENGTH
    push = samples.push(lead={"leadId": note, "note": note}, event={"name": note})
    push_json, result = prepare(push, XDM)
    assert isinstance(result, Rejected)
    assert result.reason == deadletter.Reason.EVENT_TOO_LARGE
    assert_sound(push_json, result, XDM)


def test_the_deepest_and_longest_json_the_receiver_accepts_is_handled() -> None:
    deep: Any = "bottom"
    for _ in range(MAX_DEPTH - 1):
        deep = {"level": deep}
    push = samples.push(extra=deep, numbers=[int("9" * MAX_NUMBER_CHARS)] * 1000)
    push_json, result = prepare(push, XDM)
    assert isinstance(result, Ready)
    assert_sound(push_json, result, XDM)


def test_a_number_as_long_as_the_receiver_allows_is_an_invalid_field_not_a_crash() -> None:
    _, result = prepare(samples.push(session={"length": int("9" * MAX_NUMBER_CHARS)}), XDM)
    assert isinstance(result, Rejected)
    assert "session.length" in json.loads(result.detail)


@hypothesis.settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(bodies=st.lists(mutated_pushes() | any_objects, min_size=1, max_size=5))
def test_what_the_receiver_accepts_ends_in_the_outbox_or_the_dead_letters(
    client: FlaskClient, redis_client: redis.Redis, settings: Settings, bodies: list[dict[str, Any]]
) -> None:
    # Given pushes the receiver took
    assume(depth(bodies) <= MAX_DEPTH)
    redis_client.flushall()
    resp = client.post("/v1/pushes", json=bodies, headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 202, resp.json
    accepted = redis_client.xlen(keys.INBOX)
    assert accepted == len(bodies)

    # When the ingest stage drains the inbox
    summary = ingest.drain(redis_client, settings, "hostile", budget_s=0.05)

    # Then every push is either an AEP message or a dead letter with a sender's reason, none is left
    assert summary.read == accepted
    assert summary.sent + summary.repeats + summary.dead == accepted
    assert redis_client.xlen(keys.INBOX) == 0
    assert redis_client.xpending(keys.INBOX, keys.INBOX_GROUP)["pending"] == 0
    letters = deadletter.read_all(redis_client)
    assert len(letters) == summary.dead
    assert {letter.reason for letter in letters} <= SENDER_REASONS
    assert redis_client.xlen(keys.OUTBOX) == summary.sent
