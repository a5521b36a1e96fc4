"""Validating a streamed event against the schema registered in the sandbox, as AEP's inlet does.

AEP checks each message's ``xdmEntity`` against the schema its header names and refuses what does
not conform inside the 207, with a message of its own per message (Streaming validation:
https://experienceleague.adobe.com/en/docs/experience-platform/ingestion/quality/streaming-validation
covers range, presence, enum, pattern, type and format). Fields the schema does not have are
refused too. Adobe does not publish the exact wording; the sandbox names the field by its JSON
pointer and says what is wrong with it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import jsonschema_rs

from devkit.sandbox.platform import Registry, resolved_properties

#: Checks one xdmEntity; the list of problems, empty when it conforms.
Check = Callable[[Any], list[str]]

_DATE_TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"


def _closed(spec: dict[str, Any]) -> dict[str, Any]:
    """A field's JSON Schema, with every object closed to fields the schema lacks."""
    spec = {k: v for k, v in spec.items() if k not in ("title", "description", "meta:xdmType")}
    if spec.get("format") == "date-time":
        spec = {**{k: v for k, v in spec.items() if k != "format"}, "pattern": _DATE_TIME}
    if spec.get("type") == "object" and "properties" in spec:
        spec["properties"] = {name: _closed(inner) for name, inner in spec["properties"].items()}
        spec["additionalProperties"] = False
    return spec


def checks(registry: Registry, cache: dict[tuple[str, ...], Check]) -> dict[str, Check]:
    """A check per registered schema ``$id`` (compiled once per version of the schema and its groups)."""
    out: dict[str, Check] = {}
    for schema_id, schema in registry.schemas.items():
        groups = [registry.fieldgroups.get(p.get("$ref", ""), {}) for p in schema.get("allOf", [])]
        key = (schema_id, str(schema.get("version")), *(str(g.get("version")) for g in groups))
        check = cache.get(key)
        if check is None:
            check = cache[key] = _compile(copy.deepcopy(resolved_properties(registry, schema)))
        out[schema_id] = check
    return out


def _compile(properties: dict[str, Any]) -> Check:
    document = _closed({"type": "object", "properties": properties})
    document["required"] = ["_id", "timestamp"]
    validator = jsonschema_rs.validator_for(document)

    def check(entity: Any) -> list[str]:
        if validator.is_valid(entity):
            return []
        return [
            "#" + "".join(f"/{part}" for part in error.instance_path) + f": {error.message}"
            for error in validator.iter_errors(entity)
        ]

    return check
