"""The transform stage: a valid push becomes the XDM ExperienceEvent and AEP message it is sent as."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from devkit import samples
from shared.push import PUSH_FIELDS
from shared.settings import ConfigError, Settings
from worker.errors import EventTooLarge, InvalidPush
from worker.mapping import CONVERTERS, MAPPING, FieldMap, check_table, integer, text
from worker.transform import MAX_EVENT_BYTES, check_size, encode, envelope, to_xdm
from worker.validate import Push, validate

NOW = datetime(2023, 4, 1, 1, 0, 0, tzinfo=UTC)
SCHEMA_ID = "https://ns.adobe.com/acme/schemas/5c7e3f0a2b1d4e6f8a9b0c1d2e3f4a5b"
SETTINGS = Settings(
    aep_tenant_id="acme",
    aep_schema_id=SCHEMA_ID,
    aep_org_id="4E5A1F2B3C4D5E6F7A8B9C0D@AdobeOrg",
    aep_dataset_id="6420f1c2d3e4f5a6b7c8d9e0",
)
HASHED = dataclasses.replace(SETTINGS, identity_namespace="Email_LC_SHA256")


def sha256(text: str) -> str:
    """Lowercase hex SHA-256 of the UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sample_push() -> dict[str, Any]:
    """The sample push with what a sender may vary: an offset time, a padded email, numbers as either type."""
    return samples.summit(
        timestamp="2023-04-01T02:41:57.123456+02:00",
        attendee__email=" User@Company.com ",
        exhibitor__exhibitorId=1680309557,
        lead__note="Wants a demo — café at 3pm.",
        session__length="90",
    )


def event_for(raw: dict[str, Any], settings: Settings = SETTINGS) -> dict[str, Any]:
    """The XDM event for a raw push, through validation as the worker does it."""
    return to_xdm(validate(raw, now=NOW), settings)


def minimal_push(**extra: Any) -> dict[str, Any]:
    """A push with only the required fields, plus ``extra`` (dotted keys)."""
    return {
        "transmissionId": "t-1",
        "eventType": "Registered",
        "timestamp": "2023-04-01T00:00:00Z",
        "attendee.email": "jane@example.com",
        **extra,
    }


# --- the event -----------------------------------------------------------------------------------


def test_every_field_lands_where_the_design_says_with_its_type() -> None:
    event = event_for(sample_push())

    assert event == {
        "_id": sha256("1680309557133001YHhz"),
        "timestamp": "2023-04-01T00:41:57.123Z",
        "eventType": "SessionScheduled",
        "identityMap": {
            "Email": [{"id": "user@company.com", "primary": True, "authenticatedState": "authenticated"}]
        },
        "_acme": {
            "transmissionId": "1680309557133001YHhz",
            "event": {"name": "Adobe Summit 2023"},
            "attendee": {
                "registered": "Yes",
                "attendeeId": "1619119968857001fvLB",
                "externalId": "1666809456617001wyPj",
                "clientId": "8EFC1F57631CAFE70A495ECB@8f3f1f5c631caf3e495fd8.e",
                "email": "user@company.com",
            },
            "exhibitor": {"exhibitorId": "1680309557", "externalId": "1666809514105001lSJN", "name": "IBM"},
            "lead": {"leadId": "1666809456617001wyPj", "note": "Wants a demo — café at 3pm."},
            "session": {
                "sessionId": "1666809373585001t4aV",
                "externalId": "1666809456617001wyPj",
                "code": "GS3",
                "title": "Inspiration Keynote",
                "length": 90,
            },
            "sessiontime": {
                "sessiontimeId": "1673033149739001OJLZ",
                "startTime": "2023-03-22 10:00:00",
                "endTime": "2023-03-22 11:30:00",
                "room": "B32",
            },
        },
    }
    assert type(event["_acme"]["session"]["length"]) is int


def test_id_is_the_sha256_of_the_transmission_id_and_stable() -> None:
    first = event_for(sample_push())
    again = event_for(sample_push())

    assert first["_id"] == "b0a42624ffb5bfe38d6202a687accbe01566e3cff71bacb5bbb1125e4bddd7ba"
    assert first["_id"] == sha256("1680309557133001YHhz") == again["_id"]


def test_a_numeric_transmission_id_is_hashed_as_its_string() -> None:
    event = event_for(minimal_push(transmissionId=1680309557133001))

    assert event["_id"] == sha256("1680309557133001")
    assert event["_acme"]["transmissionId"] == "1680309557133001"


def test_event_type_is_verbatim() -> None:
    assert event_for(minimal_push(eventType=" badge Scanned "))["eventType"] == " badge Scanned "


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2023-04-01T00:41:57Z", "2023-04-01T00:41:57.000Z"),
        ("2023-04-01T00:41:57.5Z", "2023-04-01T00:41:57.500Z"),
        ("2023-04-01T00:41:57.987654321Z", "2023-04-01T00:41:57.987Z"),
        ("2023-04-01T05:11:57.000+0430", "2023-04-01T00:41:57.000Z"),
        ("2023-03-31T22:41:57-02:00", "2023-04-01T00:41:57.000Z"),
    ],
)
def test_timestamp_is_utc_with_milliseconds(given: str, expected: str) -> None:
    assert event_for(minimal_push(timestamp=given))["timestamp"] == expected


def test_nested_and_dotted_pushes_give_the_same_event() -> None:
    nested = sample_push()
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{name}": item for name, item in value.items()})
        else:
            flat[key] = value

    assert encode(event_for(flat)) == encode(event_for(nested))


# --- identity ------------------------------------------------------------------------------------


def test_identity_map_in_the_email_namespace() -> None:
    event = event_for(sample_push())

    assert event["identityMap"] == {
        "Email": [{"id": "user@company.com", "primary": True, "authenticatedState": "authenticated"}]
    }


def test_identity_map_in_the_hashed_namespace_leaves_the_plain_email_out_entirely() -> None:
    event = event_for(sample_push(), HASHED)

    assert event["identityMap"] == {
        "Email_LC_SHA256": [
            {"id": sha256("user@company.com"), "primary": True, "authenticatedState": "authenticated"}
        ]
    }
    assert "email" not in event["_acme"]["attendee"]
    assert event["_acme"]["attendee"]["attendeeId"] == "1619119968857001fvLB"
    serialised = encode(envelope(event, HASHED)).lower()
    assert "user@company.com" not in serialised
    assert "company.com" not in serialised


def test_hashed_mode_drops_an_attendee_group_that_only_held_the_email() -> None:
    event = event_for(minimal_push(), HASHED)

    assert event["_acme"] == {"transmissionId": "t-1"}
    assert "example.com" not in encode(event)


def test_the_hash_is_of_the_trimmed_lower_cased_email() -> None:
    shouting = event_for(minimal_push(**{"attendee.email": "  JANE@Example.COM "}), HASHED)
    quiet = event_for(minimal_push(), HASHED)

    assert shouting["identityMap"] == quiet["identityMap"]
    assert quiet["identityMap"]["Email_LC_SHA256"][0]["id"] == sha256("jane@example.com")


# --- only values that are present ----------------------------------------------------------------


def test_empty_null_and_whitespace_values_and_empty_groups_are_left_out() -> None:
    raw = sample_push()
    raw["event"] = {"name": "   "}
    raw["lead"] = {"leadId": None, "note": ""}
    raw["exhibitor"] = {}
    raw["session"] = None
    raw["sessiontime"]["room"] = ""
    raw["attendee"]["clientId"] = None

    tenant = event_for(raw)["_acme"]

    assert set(tenant) == {"transmissionId", "attendee", "sessiontime"}
    assert "clientId" not in tenant["attendee"]
    assert "room" not in tenant["sessiontime"]
    assert "null" not in encode(tenant)
    assert '""' not in encode(tenant)


def test_a_minimal_push_gives_a_minimal_event() -> None:
    assert event_for(minimal_push()) == {
        "_id": sha256("t-1"),
        "timestamp": "2023-04-01T00:00:00.000Z",
        "eventType": "Registered",
        "identityMap": {
            "Email": [{"id": "jane@example.com", "primary": True, "authenticatedState": "authenticated"}]
        },
        "_acme": {"transmissionId": "t-1", "attendee": {"email": "jane@example.com"}},
    }


def test_unknown_fields_are_not_mapped() -> None:
    raw = sample_push()
    raw["pushType"] = "Session"
    raw["attendee"]["company"] = "Acme"

    assert event_for(raw) == event_for(sample_push())


# --- the mapping table ---------------------------------------------------------------------------


def test_the_table_maps_every_push_field_but_the_structural_ones() -> None:
    sources = [row.source for row in MAPPING]

    assert len(sources) == len(set(sources))
    assert set(sources) == set(PUSH_FIELDS) - {"eventType", "timestamp"}
    assert {row.source: row.convert for row in MAPPING}["session.length"] is integer
    check_table(MAPPING)


def test_the_transform_is_driven_by_the_table() -> None:
    table = (
        FieldMap("transmissionId", "ids.transmission"),
        FieldMap("session.code", "programme.session.code", CONVERTERS["text"]),
        FieldMap("session.length", "programme.session.minutes", CONVERTERS["integer"]),
        FieldMap("attendee.email", "contact.email"),
    )
    push = validate(sample_push(), now=NOW)

    assert to_xdm(push, SETTINGS, table)["_acme"] == {
        "ids": {"transmission": "1680309557133001YHhz"},
        "programme": {"session": {"code": "GS3", "minutes": 90}},
        "contact": {"email": "user@company.com"},
    }
    # In hashed mode the identity is left out whatever its target.
    assert "contact" not in to_xdm(push, HASHED, table)["_acme"]


def test_a_converter_changes_the_xdm_type() -> None:
    push = validate(sample_push(), now=NOW)
    table = (FieldMap("session.length", "session.lengthText", text),)

    assert to_xdm(push, SETTINGS, table)["_acme"] == {"session": {"lengthText": "90"}}


def test_a_value_the_converter_refuses_makes_the_push_invalid() -> None:
    push = validate(sample_push(), now=NOW)
    table = (FieldMap("session.title", "session.title", integer),)

    with pytest.raises(InvalidPush) as caught:
        to_xdm(push, SETTINGS, table)

    assert caught.value.detail == {"session.title": ["Cannot be converted for XDM field session.title."]}


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ((FieldMap("session.seats", "session.seats"),), "not a push field"),
        ((FieldMap("session.code", "s.code"), FieldMap("session.title", "s.code")), "written by two rows"),
        ((FieldMap("session.code", "s"), FieldMap("session.title", "s.title")), "is a parent of"),
    ],
)
def test_a_broken_table_is_refused(rows: tuple[FieldMap, ...], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_table(rows)


@pytest.mark.parametrize("target", ["", "session.", ".code", "a..b"])
def test_a_target_with_an_empty_segment_is_refused(target: str) -> None:
    with pytest.raises(ValueError, match="empty path segment"):
        FieldMap("session.code", target)


def test_the_tenant_id_must_be_configured() -> None:
    push = validate(sample_push(), now=NOW)

    with pytest.raises(ConfigError, match="AEP_TENANT_ID"):
        to_xdm(push, Settings())


def test_the_tenant_key_follows_the_settings() -> None:
    event = event_for(minimal_push(), dataclasses.replace(SETTINGS, aep_tenant_id="summit_2023"))

    assert "_summit_2023" in event
    assert "_acme" not in event


def test_to_xdm_accepts_a_push_built_directly() -> None:
    push = Push(
        transmission_id="t-9",
        event_type="LeadCaptured",
        timestamp=datetime(2023, 4, 1, tzinfo=UTC),
        email="jane@example.com",
        values={"transmissionId": "t-9", "lead.leadId": "L1"},
    )

    assert to_xdm(push, SETTINGS)["_acme"] == {"transmissionId": "t-9", "lead": {"leadId": "L1"}}


# --- the AEP message -----------------------------------------------------------------------------


def test_envelope_without_a_flow_id() -> None:
    event = event_for(minimal_push())
    schema_ref = {"id": SCHEMA_ID, "contentType": "application/vnd.adobe.xed-full+json;version=1"}

    assert envelope(event, SETTINGS) == {
        "header": {
            "schemaRef": schema_ref,
            "imsOrgId": "4E5A1F2B3C4D5E6F7A8B9C0D@AdobeOrg",
            "datasetId": "6420f1c2d3e4f5a6b7c8d9e0",
            "source": {"name": "rainbridge"},
        },
        "body": {"xdmMeta": {"schemaRef": schema_ref}, "xdmEntity": event},
    }


def test_envelope_with_a_flow_id() -> None:
    settings = dataclasses.replace(SETTINGS, aep_flow_id="d8a68cc6-d3b1-4ad3-9fa0-33b4a5d3c2b1")

    message = envelope(event_for(minimal_push()), settings)

    assert message["header"]["flowId"] == "d8a68cc6-d3b1-4ad3-9fa0-33b4a5d3c2b1"
    assert list(message["header"]) == ["schemaRef", "imsOrgId", "datasetId", "flowId", "source"]


def test_header_and_body_do_not_share_the_schema_ref() -> None:
    message = envelope(event_for(minimal_push()), SETTINGS)

    assert message["header"]["schemaRef"] == message["body"]["xdmMeta"]["schemaRef"]
    assert message["header"]["schemaRef"] is not message["body"]["xdmMeta"]["schemaRef"]


def test_encode_is_compact_and_keeps_non_ascii() -> None:
    encoded = encode({"a": [1, True, None], "note": "café — ok"})

    assert encoded == '{"a":[1,true,null],"note":"café — ok"}'
    assert json.loads(encode(envelope(event_for(sample_push()), SETTINGS)))["body"]["xdmEntity"]["_acme"][
        "lead"
    ]["note"] == ("Wants a demo — café at 3pm.")


# --- the 10 KB limit -----------------------------------------------------------------------------


def test_an_ordinary_event_is_within_the_limit() -> None:
    check_size(encode(event_for(sample_push())))


def test_an_event_over_10_kb_raises_event_too_large() -> None:
    # Each string is within the 4096-character field limit; together they are not.
    raw = sample_push()
    raw["lead"]["note"] = "n" * 4096
    raw["session"]["title"] = "t" * 4096
    raw["exhibitor"]["name"] = "e" * 4096
    event_json = encode(event_for(raw))
    size = len(event_json.encode("utf-8"))

    with pytest.raises(EventTooLarge) as caught:
        check_size(event_json)

    assert size > MAX_EVENT_BYTES == 10 * 1024
    assert str(size) in str(caught.value.detail)
    assert "10240" in str(caught.value.detail)
    assert caught.value.reason == "event_too_large"


def test_the_limit_counts_utf8_bytes_not_characters() -> None:
    euro = '"' + "€" * 3500 + '"'  # 3,502 characters, 10,502 bytes

    assert len(euro) < MAX_EVENT_BYTES
    with pytest.raises(EventTooLarge):
        check_size(euro)


def test_exactly_10_kb_is_accepted() -> None:
    check_size("x" * MAX_EVENT_BYTES)
    with pytest.raises(EventTooLarge):
        check_size("x" * (MAX_EVENT_BYTES + 1))
