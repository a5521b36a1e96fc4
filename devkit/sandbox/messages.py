"""Checking one streamed message as AEP's inlet does: an XDM envelope, or a raw push for Data Prep."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from devkit.sandbox.config import (
    FUTURE_TOLERANCE_SECONDS,
    PROFILE_MAX_EVENT_BYTES,
    XDM_CONTENT_TYPE_PREFIX,
    SandboxConfig,
)


def _parse_timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _tenant_transmission_id(entity: dict[str, Any]) -> str | None:
    for key, value in entity.items():
        if key.startswith("_") and isinstance(value, dict) and isinstance(value.get("transmissionId"), str):
            return str(value["transmissionId"])
    return None


def _is_envelope(message: dict[str, Any]) -> bool:
    # A message with only one of the two halves was meant as XDM; Adobe answers "unknown xdm format".
    return "header" in message or "body" in message


def message_ids(message: Any) -> set[str]:
    """Best-effort ids of a message, for ``reject_ids`` matching even when it is invalid."""
    if not isinstance(message, dict):
        return set()
    ids: set[str] = set()
    body = message.get("body")
    entity = body.get("xdmEntity") if isinstance(body, dict) else None
    if isinstance(entity, dict):
        if isinstance(entity.get("_id"), str):
            ids.add(entity["_id"])
        transmission_id = _tenant_transmission_id(entity)
        if transmission_id:
            ids.add(transmission_id)
    if isinstance(message.get("transmissionId"), str):
        ids.add(message["transmissionId"])
    return ids


def _schema_ref_error(ref: Any, where: str) -> str | None:
    if not isinstance(ref, dict):
        return f"{where} is missing"
    if not isinstance(ref.get("id"), str) or not ref["id"]:
        return f"{where}.id is missing"
    content_type = ref.get("contentType")
    if not isinstance(content_type, str) or not content_type.startswith(XDM_CONTENT_TYPE_PREFIX):
        return f"{where}.contentType must be {XDM_CONTENT_TYPE_PREFIX}<schema version>"
    return None


def _envelope_error(message: dict[str, Any], config: SandboxConfig, now: datetime) -> str | None:
    """Return why an XDM envelope would be rejected by DCS, or None when it is acceptable."""
    header, body = message.get("header"), message.get("body")
    if not isinstance(header, dict) or not isinstance(body, dict):
        return "Message has unknown xdm format: it needs both a header and a body object"
    if header.get("imsOrgId") != config.org_id:
        return "Message has an absent or wrong ims org in the header"
    error = _schema_ref_error(header.get("schemaRef"), "header.schemaRef")
    if error:
        return f"Message has unknown xdm format: {error}"
    if not isinstance(header.get("datasetId"), str) or not header["datasetId"]:
        return "Message is invalid: header.datasetId is missing"
    if "flowId" in header and not isinstance(header["flowId"], str):
        return "Message is invalid: header.flowId must be a string"
    source = header.get("source")
    if source is not None and not (isinstance(source, dict) and isinstance(source.get("name"), str)):
        return 'Message is invalid: header.source must be {"name": <string>}'
    meta = body.get("xdmMeta")
    if not isinstance(meta, dict) or meta.get("schemaRef") != header["schemaRef"]:
        return "Message has unknown xdm format: body.xdmMeta.schemaRef must equal header.schemaRef"
    entity = body.get("xdmEntity")
    if not isinstance(entity, dict):
        return "Message has unknown xdm format: body.xdmEntity is missing"
    if not isinstance(entity.get("_id"), str) or not entity["_id"]:
        return "Message is invalid: xdmEntity._id must be a non-empty string"
    timestamp = _parse_timestamp(entity.get("timestamp"))
    if timestamp is None:
        return "Message is invalid: xdmEntity.timestamp must be an ISO-8601 date-time with a time zone"
    if (timestamp - now).total_seconds() > FUTURE_TOLERANCE_SECONDS:
        return "Message is invalid: xdmEntity.timestamp is in the future"
    if not isinstance(entity.get("eventType"), str) or not entity["eventType"]:
        return "Message is invalid: xdmEntity.eventType must be a non-empty string"
    return None


def inspect_message(
    message: Any, flow_id: str | None, config: SandboxConfig, now: datetime
) -> tuple[dict[str, Any] | None, str | None]:
    """Return (event fields, None) for an acceptable message, or (None, reason) for a rejected one."""
    if not isinstance(message, dict):
        return None, "Message has unknown xdm format: a message must be a JSON object"
    if _is_envelope(message):
        error = _envelope_error(message, config, now)
        if error:
            return None, error
        entity = message["body"]["xdmEntity"]
        size = len(json.dumps(entity, separators=(",", ":")).encode())
        return {
            "kind": "xdm",
            "id": entity["_id"],
            "transmissionId": _tenant_transmission_id(entity),
            "eventType": entity["eventType"],
            "oversize": size > PROFILE_MAX_EVENT_BYTES,
        }, None
    if not flow_id:
        return (
            None,
            "Message has unknown xdm format: a raw message needs the x-adobe-flow-id of a Data Prep flow",
        )
    size = len(json.dumps(message, separators=(",", ":")).encode())
    return {
        "kind": "raw",
        "id": None,
        "transmissionId": message.get("transmissionId"),
        "eventType": message.get("eventType"),
        "oversize": size > PROFILE_MAX_EVENT_BYTES,
    }, None
