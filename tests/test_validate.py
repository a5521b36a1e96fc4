"""The validate stage: what a push must look like (docs/architecture.md) and how it is normalised."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from devkit import samples
from shared.push import GROUPS, MAX_STRING_LENGTH, PUSH_FIELDS
from worker.errors import InvalidPush
from worker.validate import FUTURE_MESSAGE, Push, validate

NOW = datetime(2023, 4, 1, 1, 0, 0, tzinfo=UTC)
MISSING = "Missing data for required field."


def sample_push() -> dict[str, Any]:
    """A SessionScheduled push at Adobe Summit 2023, as RainFocus sends it (nested groups)."""
    return samples.summit()


def dotted(push: dict[str, Any]) -> dict[str, Any]:
    """The same push with every group flattened to dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in push.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{name}": item for name, item in value.items()})
        else:
            flat[key] = value
    return flat


def errors_of(raw: Any, now: datetime = NOW) -> dict[str, list[str]]:
    """The messages InvalidPush carries for ``raw``."""
    with pytest.raises(InvalidPush) as caught:
        validate(raw, now=now)
    detail: dict[str, list[str]] = caught.value.detail
    return detail


def with_field(path: str, value: Any) -> dict[str, Any]:
    """The sample push with one field (dotted path) set in its nested group, or removed when ``...``."""
    push = sample_push()
    group, _, name = path.rpartition(".")
    target = push[group] if group else push
    if value is ...:
        del target[name]
    else:
        target[name] = value
    return push


# --- the happy path ------------------------------------------------------------------------------


def test_sample_push_is_valid_and_normalised() -> None:
    push = validate(sample_push(), now=NOW)

    assert isinstance(push, Push)
    assert push.transmission_id == "1680309557133001YHhz"
    assert push.event_type == "SessionScheduled"
    assert push.timestamp == datetime(2023, 4, 1, 0, 41, 57, tzinfo=UTC)
    assert push.email == "user@company.com"
    assert push.values == {
        "transmissionId": "1680309557133001YHhz",
        "eventType": "SessionScheduled",
        "timestamp": "2023-04-01T00:41:57.000Z",
        "event.name": "Adobe Summit 2023",
        "attendee.registered": "Yes",
        "attendee.attendeeId": "1619119968857001fvLB",
        "attendee.externalId": "1666809456617001wyPj",
        "attendee.clientId": "8EFC1F57631CAFE70A495ECB@8f3f1f5c631caf3e495fd8.e",
        "attendee.email": "user@company.com",
        "exhibitor.exhibitorId": "1680309557133001YHhz",
        "exhibitor.externalId": "1666809514105001lSJN",
        "exhibitor.name": "IBM",
        "lead.leadId": "1666809456617001wyPj",
        "lead.note": "Wants a demo of the Ops dashboard.",
        "session.sessionId": "1666809373585001t4aV",
        "session.externalId": "1666809456617001wyPj",
        "session.code": "GS3",
        "session.title": "Inspiration Keynote",
        "session.length": 90,
        "sessiontime.sessiontimeId": "1673033149739001OJLZ",
        "sessiontime.startTime": "2023-03-22 10:00:00",
        "sessiontime.endTime": "2023-03-22 11:30:00",
        "sessiontime.room": "B32",
    }


def test_schema_covers_every_field_of_the_design_table() -> None:
    # The sample carries every field of the push schema, so the schema must know exactly those.
    assert set(PUSH_FIELDS) == set(dotted(sample_push()))
    assert GROUPS == ("event", "attendee", "exhibitor", "lead", "session", "sessiontime")


def test_validate_does_not_modify_its_input() -> None:
    raw = sample_push()
    before = copy.deepcopy(raw)

    validate(raw, now=NOW)

    assert raw == before


def test_strings_are_kept_verbatim_except_the_email() -> None:
    push = validate(with_field("session.title", "  Opening  Keynote "), now=NOW)

    assert push.values["session.title"] == "  Opening  Keynote "
    assert push.values["sessiontime.startTime"] == "2023-03-22 10:00:00"


def test_email_is_trimmed_and_lower_cased() -> None:
    push = validate(with_field("attendee.email", "  Jane.DOE@Example.COM\t"), now=NOW)

    assert push.email == "jane.doe@example.com"
    assert push.values["attendee.email"] == "jane.doe@example.com"


# --- nested and dotted forms ---------------------------------------------------------------------


def test_nested_dotted_and_mixed_forms_give_the_same_push() -> None:
    nested = sample_push()
    flat = dotted(nested)
    mixed = dotted(nested)
    for name in nested["session"]:
        del mixed[f"session.{name}"]
    mixed["session"] = nested["session"]

    expected = validate(nested, now=NOW)

    assert validate(flat, now=NOW) == expected
    assert validate(mixed, now=NOW) == expected


def test_a_field_given_both_ways_with_the_same_value_is_fine() -> None:
    raw = sample_push()
    raw["session.code"] = "GS3"
    raw["session.length"] = "90"  # the same value once normalised
    raw["attendee.email"] = "user@company.com"

    push = validate(raw, now=NOW)

    assert push.values["session.code"] == "GS3"
    assert push.values["session.length"] == 90


def test_a_field_given_both_ways_with_different_values_is_invalid() -> None:
    raw = sample_push()
    raw["session.code"] = "GS4"
    raw["attendee.email"] = "someone.else@company.com"

    errors = errors_of(raw)

    assert errors == {
        "session.code": ["Given both nested and as a dotted key, with different values."],
        "attendee.email": ["Given both nested and as a dotted key, with different values."],
    }


def test_an_absent_value_in_one_form_does_not_conflict_with_the_other() -> None:
    raw = sample_push()
    raw["session.code"] = None
    raw["session"]["title"] = ""
    raw["session.title"] = "Inspiration Keynote"

    push = validate(raw, now=NOW)

    assert push.values["session.code"] == "GS3"
    assert push.values["session.title"] == "Inspiration Keynote"


@pytest.mark.parametrize("group", ["text", 42, ["a"], True])
def test_a_group_that_is_not_an_object_is_invalid(group: Any) -> None:
    raw = sample_push()
    raw["session"] = group

    assert errors_of(raw) == {"session": ["Not a valid object."]}


def test_a_null_or_empty_group_is_absent() -> None:
    raw = sample_push()
    raw["lead"] = None
    raw["session"] = {}
    raw["exhibitor"] = ""

    values = validate(raw, now=NOW).values

    assert not [path for path in values if path.startswith(("lead.", "session.", "exhibitor."))]


def test_unknown_fields_are_ignored_at_the_top_and_in_groups() -> None:
    raw = sample_push()
    raw["pushType"] = "Session"
    raw["badge"] = {"printed": True}
    raw["attendee"]["favouriteColour"] = {"not": "a scalar"}
    raw["session.capacity"] = 300

    values = validate(raw, now=NOW).values

    assert values == validate(sample_push(), now=NOW).values


# --- absent values -------------------------------------------------------------------------------


@pytest.mark.parametrize("empty", [None, "", "   ", "\t\n"])
def test_null_empty_and_whitespace_values_are_left_out(empty: Any) -> None:
    raw = with_field("session.title", empty)
    raw["lead"]["note"] = empty
    raw["session.length"] = empty

    values = validate(raw, now=NOW).values

    assert "session.title" not in values
    assert "lead.note" not in values
    assert values["session.length"] == 90


def test_only_the_required_fields_make_a_valid_push() -> None:
    raw = {
        "transmissionId": "t1",
        "eventType": "Registered",
        "timestamp": "2023-04-01T00:41:57Z",
        "attendee.email": "a@b.co",
    }

    push = validate(raw, now=NOW)

    assert push.values == {**raw, "timestamp": "2023-04-01T00:41:57.000Z"}


def test_missing_required_fields_are_all_reported() -> None:
    assert errors_of({}) == {
        "transmissionId": [MISSING],
        "eventType": [MISSING],
        "timestamp": [MISSING],
        "attendee.email": [MISSING],
    }


@pytest.mark.parametrize("path", ["transmissionId", "eventType", "timestamp", "attendee.email"])
@pytest.mark.parametrize("empty", [..., None, "", "  "])
def test_a_required_field_absent_in_any_way_is_missing(path: str, empty: Any) -> None:
    assert errors_of(with_field(path, empty)) == {path: [MISSING]}


def test_every_error_is_collected_not_just_the_first() -> None:
    raw = sample_push()
    del raw["transmissionId"]
    raw["timestamp"] = "2023-04-01T00:41:57"
    raw["attendee"]["email"] = "not an email"
    raw["session"]["length"] = "ninety"
    raw["lead"] = ["x"]
    raw["exhibitor.name"] = "Not IBM"

    assert errors_of(raw) == {
        "transmissionId": [MISSING],
        "timestamp": ["Timestamp must include a timezone (Z or an offset such as +02:00)."],
        "attendee.email": ["Not a valid email address."],
        "session.length": ["Not a valid integer."],
        "lead": ["Not a valid object."],
        "exhibitor.name": ["Given both nested and as a dotted key, with different values."],
    }


# --- types ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [(123, "123"), (123.0, "123"), (0, "0"), (-7, "-7"), (1.5, "1.5"), (2**70, str(2**70)), ("007", "007")],
)
def test_numbers_given_for_strings_become_strings(given: Any, expected: str) -> None:
    raw = with_field("attendee.attendeeId", given)
    raw["transmissionId"] = given

    push = validate(raw, now=NOW)

    assert push.values["attendee.attendeeId"] == expected
    assert push.transmission_id == expected


@pytest.mark.parametrize("given", [True, False, {"id": 1}, [1, 2], float("nan"), float("inf")])
def test_booleans_objects_arrays_and_non_finite_numbers_are_not_strings(given: Any) -> None:
    assert errors_of(with_field("session.code", given)) == {"session.code": ["Not a valid string."]}


@pytest.mark.parametrize(("given", "expected"), [(90, 90), ("90", 90), (" 90 ", 90), ("+90", 90), (0, 0)])
def test_session_length_accepts_integers_and_numeric_strings(given: Any, expected: int) -> None:
    push = validate(with_field("session.length", given), now=NOW)

    assert push.values["session.length"] == expected
    assert type(push.values["session.length"]) is int


@pytest.mark.parametrize(
    "given", ["90.5", "abc", "9 0", "٩٠", "0x5a", "1_000", True, False, 90.5, 90.0, {}, [90]]
)
def test_session_length_refuses_anything_else(given: Any) -> None:
    assert errors_of(with_field("session.length", given)) == {"session.length": ["Not a valid integer."]}


@pytest.mark.parametrize("given", [-1, "-5", 2**31, str(2**40)])
def test_session_length_must_fit_xdm_integer_and_not_be_negative(given: Any) -> None:
    assert errors_of(with_field("session.length", given)) == {
        "session.length": ["Must be between 0 and 2147483647."]
    }


@pytest.mark.parametrize(
    "email",
    ["no-at-sign", "two@@example.com", "a@b@c.com", "jane doe@example.com", "@example.com", "jane@", 42],
)
def test_email_must_look_like_an_email(email: Any) -> None:
    assert errors_of(with_field("attendee.email", email)) == {
        "attendee.email": ["Not a valid email address."]
    }


@pytest.mark.parametrize("email", ["a@b", "first.last+tag@sub.example.museum", "Ünïcødé@exämple.de"])
def test_email_check_is_permissive(email: str) -> None:
    assert validate(with_field("attendee.email", email), now=NOW).email == email.lower()


def test_a_one_megabyte_lead_note_is_invalid() -> None:
    note = "x" * (1024 * 1024)

    assert errors_of(with_field("lead.note", note)) == {
        "lead.note": ["Longer than the maximum of 4096 characters (got 1048576)."]
    }


def test_a_string_at_the_limit_is_fine_and_the_limit_applies_to_every_field() -> None:
    at_limit = "n" * MAX_STRING_LENGTH
    too_long = at_limit + "n"
    assert validate(with_field("lead.note", at_limit), now=NOW).values["lead.note"] == at_limit

    raw = with_field("session.title", too_long)
    raw["eventType"] = too_long
    raw["attendee"]["email"] = too_long + "@example.com"
    raw["session"]["length"] = " " * 5000 + "90"

    assert set(errors_of(raw)) == {"session.title", "eventType", "attendee.email", "session.length"}


# --- timestamps ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2023-04-01T00:41:57.000Z", "2023-04-01T00:41:57.000Z"),
        ("2023-04-01T00:41:57Z", "2023-04-01T00:41:57.000Z"),
        ("2023-04-01T00:41:57z", "2023-04-01T00:41:57.000Z"),
        ("2023-04-01T00:41:57.1Z", "2023-04-01T00:41:57.100Z"),
        ("2023-04-01T00:41:57.123Z", "2023-04-01T00:41:57.123Z"),
        ("2023-04-01T00:41:57.123456Z", "2023-04-01T00:41:57.123Z"),
        ("2023-04-01T00:41:57.999999999Z", "2023-04-01T00:41:57.999Z"),
        ("2023-04-01T00:41:57.1234567891234Z", "2023-04-01T00:41:57.123Z"),
        ("2023-04-01T00:41:57,5Z", "2023-04-01T00:41:57.500Z"),
        ("2023-04-01T02:41:57+02:00", "2023-04-01T00:41:57.000Z"),
        ("2023-04-01T02:41:57.250+0200", "2023-04-01T00:41:57.250Z"),
        ("2023-04-01T02:41:57+02", "2023-04-01T00:41:57.000Z"),
        ("2023-03-31T19:11:57-05:30", "2023-04-01T00:41:57.000Z"),
        ("2023-04-01T00:41:57-00:00", "2023-04-01T00:41:57.000Z"),
        ("2023-04-01 00:41:57Z", "2023-04-01T00:41:57.000Z"),
        ("2023-04-01T00:41Z", "2023-04-01T00:41:00.000Z"),
        ("2023-04-01T01:30:00+01:00", "2023-04-01T00:30:00.000Z"),
        (" 2023-04-01T00:41:57Z ", "2023-04-01T00:41:57.000Z"),
    ],
)
def test_timestamps_are_normalised_to_utc_milliseconds(given: str, expected: str) -> None:
    push = validate(with_field("timestamp", given), now=NOW)

    assert push.values["timestamp"] == expected
    assert push.timestamp.utcoffset() == timedelta(0)


def test_timestamp_keeps_microseconds_in_the_push() -> None:
    push = validate(with_field("timestamp", "2023-04-01T00:41:57.123456789Z"), now=NOW)

    assert push.timestamp == datetime(2023, 4, 1, 0, 41, 57, 123456, tzinfo=UTC)


@pytest.mark.parametrize("given", ["2023-04-01T00:41:57", "2023-04-01T00:41:57.000", "2023-04-01 00:41"])
def test_a_timestamp_without_timezone_is_invalid(given: str) -> None:
    assert errors_of(with_field("timestamp", given)) == {
        "timestamp": ["Timestamp must include a timezone (Z or an offset such as +02:00)."]
    }


@pytest.mark.parametrize(
    "given",
    [
        "yesterday",
        "2023-04-01",
        "2023-W13-6T00:41:57Z",
        "20230401T004157Z",
        "2023-02-30T00:00:00Z",
        "2023-04-01T24:00:00Z",
        "2023-04-01T00:41:60Z",
        "2023-04-01T00:41:57+24:00",
        "2023-04-01T00:41:57+02:60",
        "2023-04-01T00:41:57.Z",
        "2023-04-01T00:41:57 Z",
        "0001-01-01T00:00:00+01:00",
        1680309717000,
        True,
    ],
)
def test_a_malformed_timestamp_is_invalid(given: Any) -> None:
    assert errors_of(with_field("timestamp", given)) == {
        "timestamp": ["Not a valid date-time: expected ISO 8601 such as 2023-04-01T00:41:57.000Z."]
    }


def test_a_timestamp_nine_minutes_ahead_is_accepted() -> None:
    ahead = (NOW + timedelta(minutes=9)).strftime("%Y-%m-%dT%H:%M:%SZ")

    assert validate(with_field("timestamp", ahead), now=NOW).timestamp == NOW + timedelta(minutes=9)


@pytest.mark.parametrize(
    "given",
    ["2023-04-01T01:10:01Z", "2023-04-01T03:11:00+02:00", "2023-04-02T00:00:00Z", "2099-01-01T00:00:00Z"],
)
def test_a_timestamp_more_than_ten_minutes_ahead_is_invalid(given: str) -> None:
    assert errors_of(with_field("timestamp", given)) == {"timestamp": [FUTURE_MESSAGE]}
    assert FUTURE_MESSAGE == "Timestamp is more than 10 minutes in the future."


def test_ten_minutes_ahead_exactly_is_still_accepted() -> None:
    assert validate(with_field("timestamp", "2023-04-01T01:10:00Z"), now=NOW)


def test_the_future_is_judged_in_utc_whatever_the_offset() -> None:
    # 09:00 at +08:00 is 01:00 UTC: now, not eight hours ahead.
    assert validate(with_field("timestamp", "2023-04-01T09:00:00+08:00"), now=NOW)


def test_now_defaults_to_the_current_time_and_may_be_naive_utc() -> None:
    just_now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert validate(with_field("timestamp", just_now))

    naive_now = NOW.replace(tzinfo=None)
    assert validate(with_field("timestamp", "2023-04-01T01:05:00Z"), now=naive_now)
    assert errors_of(with_field("timestamp", "2023-04-01T01:11:00Z"), now=naive_now)


def test_now_may_be_given_in_another_timezone() -> None:
    tokyo_now = NOW.astimezone(timezone(timedelta(hours=9)))

    assert validate(with_field("timestamp", "2023-04-01T01:05:00Z"), now=tokyo_now)


# --- the top level -------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [[], [{"transmissionId": "x"}], "push", 42, None, True])
def test_a_push_must_be_an_object(raw: Any) -> None:
    assert errors_of(raw) == {"_schema": ["Invalid input type: a push must be a JSON object."]}


def test_the_error_is_permanent_with_the_invalid_payload_reason() -> None:
    with pytest.raises(InvalidPush) as caught:
        validate({}, now=NOW)

    assert caught.value.reason == "invalid_payload"
