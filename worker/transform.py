"""Pipeline stage: a valid push → an XDM ExperienceEvent, wrapped and encoded as AEP expects.

The event and its envelope are described in docs/architecture.md ("The XDM event").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from shared.push import IDENTITY_FIELD, PUSH_FIELDS, xdm_time
from shared.settings import ConfigError, Settings
from worker import mapfile
from worker.errors import EventTooLarge, InvalidPush
from worker.mapping import MAPPING, FieldMap
from worker.validate import Push

#: AEP Profile drops an ExperienceEvent larger than this, without telling the sender.
MAX_EVENT_BYTES = 10 * 1024

HASHED_NAMESPACE = "Email_LC_SHA256"
XED_CONTENT_TYPE = "application/vnd.adobe.xed-full+json;version=1"
SOURCE_NAME = "rainbridge"

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def event_id(transmission_id: str) -> str:
    """The event's ``_id``: SHA-256 of the transmissionId, so a re-send is the same AEP record."""
    return _sha256(transmission_id)


def to_xdm(push: Push, settings: Settings, table: Iterable[FieldMap] = MAPPING) -> dict[str, Any]:
    """The XDM ExperienceEvent for ``push``: structural fields, identityMap and the tenant object."""
    if not settings.aep_tenant_id:
        raise ConfigError("AEP_TENANT_ID is not set (required to build XDM events)")
    hashed = settings.identity_namespace == HASHED_NAMESPACE
    values = push.values
    tenant: dict[str, Any] = {}
    for row in table:
        # In hashed mode the plain email must not reach AEP at all, under any target.
        if hashed and row.source == IDENTITY_FIELD:
            continue
        value = values.get(row.source)
        if value is None:
            continue
        try:
            value = row.convert(value)
        except ValueError:
            raise InvalidPush({row.source: [f"Cannot be converted for XDM field {row.target}."]}) from None
        if value is None or value == "":
            continue
        node = tenant
        for key in row.parents:
            node = node.setdefault(key, {})
        node[row.leaf] = value

    if hashed:
        identity = {HASHED_NAMESPACE: [_identity(_sha256(push.email))]}
    else:
        identity = {"Email": [_identity(push.email)]}
    event: dict[str, Any] = {
        "_id": event_id(push.transmission_id),
        "timestamp": xdm_time(push.timestamp),
        "eventType": push.event_type,
        "identityMap": identity,
    }
    if tenant:
        event[settings.tenant_key] = tenant
    return event


def map_event(
    push: Push, raw: Mapping[str, Any], mapping: mapfile.Mapping, flat: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The XDM ExperienceEvent for ``push`` by an operator's mapping (tenant already resolved).

    The mapping reads the validated fields as validation normalised them, and every other field
    of the raw push as it came (a new RainFocus field is mappable the day it appears); ``flat``
    is :func:`worker.mapfile.flatten` of ``raw`` when the caller has it already.
    """
    return mapping.apply(push_values(push, raw, flat), push.event_type)


def push_values(push: Push, raw: Mapping[str, Any], flat: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a mapping reads: the raw push's fields by path, the known ones as validation left them."""
    flat = mapfile.flatten(raw) if flat is None else flat
    # A known field is only ever read as validation left it: one it found absent stays absent.
    values: dict[str, Any] = {path: value for path, value in flat.items() if path not in PUSH_FIELDS}
    values.update(push.values)
    return values


def _identity(identifier: str) -> dict[str, Any]:
    return {"id": identifier, "primary": True, "authenticatedState": "authenticated"}


def envelope(event: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The AEP streaming message carrying ``event``: header (schema, org, dataset, flow) and body."""
    header: dict[str, Any] = {
        "schemaRef": _schema_ref(settings),
        "imsOrgId": settings.aep_org_id,
        "datasetId": settings.aep_dataset_id,
    }
    if settings.aep_flow_id:
        header["flowId"] = settings.aep_flow_id
    header["source"] = {"name": SOURCE_NAME}
    return {"header": header, "body": {"xdmMeta": {"schemaRef": _schema_ref(settings)}, "xdmEntity": event}}


def _schema_ref(settings: Settings) -> dict[str, Any]:
    # A fresh dict per use: header and body must not share an object a caller might edit.
    return {"id": settings.aep_schema_id, "contentType": XED_CONTENT_TYPE}


def encode(message: Any) -> str:
    """Compact JSON for ``message``, non-ASCII kept as is (AEP counts bytes, escapes only add some)."""
    return _encoder.encode(message)


def check_size(event_json: str) -> None:
    """Raise EventTooLarge if the encoded event is over AEP Profile's 10 KB limit."""
    size = len(event_json.encode("utf-8"))
    if size > MAX_EVENT_BYTES:
        raise EventTooLarge(
            f"XDM event is {size} bytes; AEP Profile drops ExperienceEvents over {MAX_EVENT_BYTES} bytes."
        )
