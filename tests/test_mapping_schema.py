"""What a mapping implies for AEP: the field group, the identity descriptor, the Data Prep export, and
the JSON Schema every event is checked against before it is sent."""

from __future__ import annotations

import copy
import textwrap

import pytest

from devkit import samples
from worker import mapfile, schema
from worker.errors import XdmInvalid
from worker.transform import map_event
from worker.validate import validate

SCHEMA_ID = "https://ns.adobe.com/acme/schemas/s1"
DEFAULT = mapfile.default("Email").resolve("acme")
HASHED = mapfile.default("Email_LC_SHA256").resolve("acme")
OVERRIDING = mapfile.loads(
    textwrap.dedent(
        """\
        version: 1
        identities:
          - {namespace: Email, value: lower(trim(attendee.email)), primary: true}
          - {namespace: ECID, value: attendee.clientId, authenticatedState: ambiguous}
        fields:
          _{tenant}.transmissionId: transmissionId
          _{tenant}.lead.note: lead.note
          _{tenant}.session.minutes: {value: session.length, type: integer}
        overrides:
          LeadCaptured:
            _{tenant}.lead.note: upper(lead.note)
            _{tenant}.lead.score: {value: to_integer(lead.score), type: integer}
          Registered:
            _{tenant}.lead.note: null
        """
    )
).resolve("acme")


def test_the_field_group_extends_experience_event_with_the_mappings_types() -> None:
    group = schema.field_group(DEFAULT, "acme")
    assert group["meta:intendedToExtend"] == ["https://ns.adobe.com/xdm/context/experienceevent"]
    assert group["allOf"] == [{"$ref": "#/definitions/rainbridge"}]
    tenant = group["definitions"]["rainbridge"]["properties"]["_acme"]
    assert tenant["type"] == "object"
    session = tenant["properties"]["session"]["properties"]
    assert session["length"] == {
        "title": "length",
        "type": "integer",
        "minimum": -(2**31),
        "maximum": 2**31 - 1,
    }
    assert session["title"] == {"title": "title", "type": "string"}
    assert set(tenant["properties"]) == {
        "transmissionId",
        "event",
        "attendee",
        "exhibitor",
        "lead",
        "session",
        "sessiontime",
    }


def test_an_override_only_field_is_in_the_field_group() -> None:
    lead = schema.field_group(OVERRIDING, "acme")["definitions"]["rainbridge"]["properties"]["_acme"][
        "properties"
    ]["lead"]
    assert set(lead["properties"]) == {"note", "score"}


def test_the_identity_descriptor_marks_the_tenant_field_holding_the_primary_identity() -> None:
    assert schema.identity_descriptor(DEFAULT, "acme", SCHEMA_ID) == {
        "@type": "xdm:descriptorIdentity",
        "xdm:sourceSchema": SCHEMA_ID,
        "xdm:sourceVersion": 1,
        "xdm:sourceProperty": "/_acme/attendee/email",
        "xdm:namespace": "Email",
        "xdm:property": "xdm:code",
        "xdm:isPrimary": True,
    }
    # Hashed: no field holds the email, identityMap alone carries the identity.
    assert schema.identity_descriptor(HASHED, "acme", SCHEMA_ID) is None


def test_the_data_prep_export_writes_identities_fields_and_overrides_as_aep_expressions() -> None:
    exported = schema.mapping_set(OVERRIDING, SCHEMA_ID)
    assert exported["outputSchema"] == {
        "schemaRef": {"id": SCHEMA_ID, "contentType": "application/vnd.adobe.xed-full+json;version=1"}
    }
    by_destination = {m["destination"]: m for m in exported["mappings"]}
    assert by_destination["identityMap.Email[0].id"] == {
        "sourceType": "EXPRESSION",
        "source": "lower(trim(attendee.email))",
        "destination": "identityMap.Email[0].id",
    }
    assert by_destination["identityMap.ECID[0].primary"]["source"] == "false"
    assert by_destination["identityMap.ECID[0].authenticatedState"]["source"] == '"ambiguous"'
    assert by_destination["_id"]["source"] == "sha256(transmissionId)"
    assert by_destination["_acme.transmissionId"]["sourceType"] == "ATTRIBUTE"
    assert by_destination["_acme.lead.note"]["source"] == (
        'iif(eventType == "Registered", nullify(),'
        ' iif(eventType == "LeadCaptured", upper(lead.note), lead.note))'
    )
    assert by_destination["_acme.lead.score"]["source"] == (
        'iif(eventType == "LeadCaptured", to_integer(lead.score), nullify())'
    )


def test_every_default_event_fits_its_schema() -> None:
    for raw in (samples.summit(), samples.push(), samples.summit(lead=None, exhibitor=None)):
        schema.check_event(map_event(validate(raw), raw, DEFAULT), DEFAULT, "acme")


@pytest.mark.parametrize(
    ("tamper", "pointer", "message"),
    [
        (lambda e: e["_acme"]["session"].update(length="ninety"), "/_acme/session/length", "is not of type"),
        (lambda e: e["_acme"]["session"].update(length=2**31), "/_acme/session/length", "maximum"),
        (lambda e: e["_acme"].update(surprise=1), "/_acme", "surprise"),
        (lambda e: e.update(timestamp="2023-04-01"), "/timestamp", "does not match"),
        (lambda e: e["identityMap"]["Email"][0].update(id=""), "/identityMap/Email/0/id", "shorter"),
    ],
)
def test_an_event_that_breaks_the_schema_is_refused_with_a_pointer_per_violation(
    tamper, pointer: str, message: str
) -> None:  # type: ignore[no-untyped-def]
    raw = samples.summit()
    event = copy.deepcopy(map_event(validate(raw), raw, DEFAULT))
    tamper(event)
    with pytest.raises(XdmInvalid) as caught:
        schema.check_event(event, DEFAULT, "acme")
    (violation,) = caught.value.detail
    assert violation["pointer"] == pointer
    assert message in violation["message"]
    assert caught.value.reason == "xdm_invalid"
