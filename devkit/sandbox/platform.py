"""The sandbox's Platform APIs: Schema Registry, Catalog, Flow Service and Data Prep, as AEP answers them.

Only what ``rainbridge aep setup`` and ``rainbridge check`` call, with Adobe's request and response
shapes (each route cites its page). What is created is kept in :class:`Registry` (under the
sandbox's lock), shown on the sandbox page, and used to validate streamed events
(:mod:`devkit.sandbox.xdm`). Adobe's pages, by tag:

- SR: https://experienceleague.adobe.com/en/docs/experience-platform/xdm/api/getting-started
  (ids, Accept headers), .../xdm/api/field-groups, .../xdm/api/schemas, .../xdm/api/descriptors,
  .../xdm/api/appendix (``property=title==X`` filters), .../xdm/troubleshooting-guide (error bodies:
  a repeated title is 400 ``XDM-1521-400``, not 409).
- CAT: https://experienceleague.adobe.com/en/docs/experience-platform/catalog/api/create-dataset
  (``["@/dataSets/<id>"]``), .../catalog/api/filter-data (``property=name==X``; id-keyed objects).
- FS: https://experienceleague.adobe.com/en/docs/experience-platform/sources/api-tutorials/create/streaming/http
  (connections, inletUrl, source/target connections, flows), .../dataflows/api/sort-and-filter.
- DP: https://experienceleague.adobe.com/en/docs/experience-platform/data-prep/api/mapping-set
- Gateway errors: https://experienceleague.adobe.com/en/docs/experience-platform/landing/troubleshooting
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from flask import Flask, Response, request

from devkit.sandbox.replies import json_reply

if TYPE_CHECKING:
    from devkit.sandbox.state import SandboxState

EXPERIENCE_EVENT = "https://ns.adobe.com/xdm/context/experienceevent"
HTTP_API_SPEC = "bc7b00d6-623a-4dfc-9fdb-f1240aeadaeb"
DATA_LAKE_SPEC = "c604ff05-7f1a-43c0-8e18-33bf874cb11c"
FLOW_SPECS = {"d8a6f005-7eaf-4153-983e-e8574508b877", "c1a19761-d2c7-4702-b9fa-fe91f0613e81"}

_BASE = "/data/foundation"


@dataclass
class Registry:
    """What was created through the Platform APIs (caller holds the sandbox's lock)."""

    fieldgroups: dict[str, dict[str, Any]] = field(default_factory=dict)
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    descriptors: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    source_connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    target_connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    flows: dict[str, dict[str, Any]] = field(default_factory=dict)
    mapping_sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def new_hex(self, size: int = 32) -> str:
        """A fresh id of Adobe's hex form."""
        return hashlib.sha256(f"{time.time_ns()}:{next(self._numbers)}".encode()).hexdigest()[:size]

    def inlets(self) -> set[str]:
        """The inlet ids of the streaming connections created here."""
        return {c["auth"]["params"]["inletId"] for c in self.connections.values()}

    def summary(self) -> dict[str, list[str]]:
        """Names of everything created, for the sandbox page and stats."""
        return {
            "field groups": [g["title"] for g in self.fieldgroups.values()],
            "schemas": [s["title"] for s in self.schemas.values()],
            "descriptors": [d["xdm:sourceProperty"] for d in self.descriptors.values()],
            "datasets": [d["name"] for d in self.datasets.values()],
            "connections": [c["name"] for c in self.connections.values()],
            "flows": [f["name"] for f in self.flows.values()],
            "mapping sets": list(self.mapping_sets),
        }


def _xdm_error(status: int, code: str, title: str, detail: str) -> Response:
    # Schema Registry's error body (troubleshooting guide; the spec's errorBasic).
    body = {
        "type": f"http://ns.adobe.com/aep/errors/{code}",
        "title": title,
        "status": status,
        "report": {"registryRequestId": str(uuid.uuid4()), "detailed-message": detail, "sub-errors": []},
        "detail": detail,
    }
    return json_reply(body, status)


def _service_error(status: int, code: str, message: str) -> Response:
    # Flow Service, Catalog and Data Prep document their codes, not their bodies: Adobe's gateway shape.
    return json_reply({"error_code": code, "message": message}, status)


def _filter(args: dict[str, str], key: str = "property") -> tuple[str, str] | None:
    """``property=name==X`` as (path, value); None when absent."""
    expression = args.get(key)
    if not expression or "==" not in expression:
        return None
    path, _, value = expression.partition("==")
    return path, value


def _lookup(record: dict[str, Any], path: str) -> Any:
    value: Any = record
    for part in path.split("."):
        if part.endswith("[]"):
            value = value.get(part[:-2]) if isinstance(value, dict) else None
            break
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _matches(record: dict[str, Any], condition: tuple[str, str] | None) -> bool:
    if condition is None:
        return True
    path, wanted = condition
    value = _lookup(record, path)
    return wanted in value if isinstance(value, list) else value == wanted


class Platform:
    """The Platform API routes, bound to one sandbox's state."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.config = state.config

    @property
    def registry(self) -> Registry:
        """The state's registry (a reset replaces it)."""
        return self.state.registry

    # --- the gateway --------------------------------------------------------------------------

    def gate(self) -> Response | None:
        """Adobe's gateway checks: a live token, the client's API key, the org and a sandbox name."""
        if not request.path.startswith(_BASE + "/"):
            return None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        with self.state.lock:
            expiry = self.state.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expiry is None or expiry <= time.monotonic():
            return json_reply({"error_code": "401013", "message": "Oauth token is not valid"}, 401)
        api_key = request.headers.get("x-api-key")
        if not api_key:
            return json_reply({"error_code": "403000", "message": "Api Key is required"}, 403)
        if api_key != self.config.client_id:
            return json_reply({"error_code": "403003", "message": "Api Key is invalid"}, 403)
        org = request.headers.get("x-gw-ims-org-id")
        if not org:
            return json_reply({"error_code": "400003", "message": "Missing header"}, 400)
        if org != self.config.org_id:
            return json_reply({"error_code": "403025", "message": "Profile is not valid"}, 403)
        if not request.headers.get("x-sandbox-name"):
            return _service_error(400, "2105-400", "x-sandbox-name header is missing")
        if request.method in ("POST", "PUT", "PATCH") and request.get_json(silent=True) is None:
            body = {"type": "/placeholder/type/uri", "status": 400, "title": "BadRequestError"}
            return json_reply({**body, "detail": "A valid content-type must be specified"}, 400)
        return None

    # --- Schema Registry ----------------------------------------------------------------------

    def stats(self) -> Response:
        """``GET /schemaregistry/stats``: the org's tenant id and counts."""
        with self.state.lock:
            counts = {
                "schemas": len(self.registry.schemas),
                "mixins": len(self.registry.fieldgroups),
                "datatypes": 0,
                "classes": 0,
                "unions": sum(
                    "union" in s.get("meta:immutableTags", []) for s in self.registry.schemas.values()
                ),
            }
        return json_reply(
            {"imsOrg": self.config.org_id, "tenantId": self.config.tenant_id, "counts": counts}, 200
        )

    def _resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return self.registry.fieldgroups if kind == "fieldgroups" else self.registry.schemas

    def list_resources(self, kind: str) -> Response:
        """``GET /tenant/fieldgroups|schemas``, ``property=title==X``; id form unless full is asked."""
        condition = _filter(request.args)
        full = "xed-id" not in request.headers.get("Accept", "")
        with self.state.lock:
            results = [
                copy.deepcopy(r) if full else {k: r[k] for k in ("$id", "meta:altId", "version", "title")}
                for r in self._resources(kind).values()
                if _matches(r, condition)
            ]
        page = {"orderby": "title", "next": None, "count": len(results)}
        return json_reply({"results": results, "_page": page, "_links": {"next": None}}, 200)

    def _find(self, kind: str, ref: str) -> dict[str, Any] | None:
        ref = unquote(ref)
        for resource in self._resources(kind).values():
            if ref in (resource["$id"], resource["meta:altId"]):
                return resource
        return None

    def _title_taken(self, title: str, except_id: str | None = None) -> bool:
        # Titles are unique across every resource type of the registry.
        resources = [*self.registry.fieldgroups.values(), *self.registry.schemas.values()]
        return any(r["title"] == title and r["$id"] != except_id for r in resources)

    def create_resource(self, kind: str) -> Response:
        """``POST /tenant/fieldgroups|schemas``: 201 with the stored resource."""
        body = request.get_json()
        title = body.get("title") if isinstance(body, dict) else None
        if not isinstance(title, str) or not title:
            return _xdm_error(400, "XDM-1000-400", "Bad Request", "title is required")
        problem = self._check_resource(kind, body)
        if problem:
            return _xdm_error(400, "XDM-1020-400", "Invalid resource", problem)
        with self.state.lock:
            if self._title_taken(title):
                detail = f"Object titles must be unique. An object with the title '{title}' already exists"
                return _xdm_error(400, "XDM-1521-400", "Title not unique", detail)
            hex_id = self.registry.new_hex(48 if kind == "fieldgroups" else 32)
            segment = "mixins" if kind == "fieldgroups" else "schemas"
            tenant = self.config.tenant_id
            resource = {
                **copy.deepcopy(body),
                "$id": f"https://ns.adobe.com/{tenant}/{segment}/{hex_id}",
                "meta:altId": f"_{tenant}.{segment}.{hex_id}",
                "meta:resourceType": segment,
                "version": "1.0",
                "meta:containerId": "tenant",
                "meta:tenantNamespace": f"_{tenant}",
            }
            if kind == "schemas":
                refs = [part.get("$ref") for part in body.get("allOf", []) if isinstance(part, dict)]
                resource["meta:class"] = EXPERIENCE_EVENT if EXPERIENCE_EVENT in refs else None
                resource["meta:extends"] = [ref for ref in refs if isinstance(ref, str)]
            self._resources(kind)[resource["$id"]] = resource
            return json_reply(copy.deepcopy(resource), 201)

    def _check_resource(self, kind: str, body: dict[str, Any]) -> str | None:
        if kind == "fieldgroups":
            if not body.get("meta:intendedToExtend"):
                return "meta:intendedToExtend is required: the classes the field group extends"
            tenant_key = f"_{self.config.tenant_id}"
            for name, definition in (body.get("definitions") or {}).items():
                for key in definition.get("properties") or {}:
                    if key != tenant_key:
                        return f"Custom fields must be under {tenant_key}, not {key} (definitions/{name})"
            return None
        refs = [part.get("$ref") for part in body.get("allOf", []) if isinstance(part, dict)]
        if EXPERIENCE_EVENT not in refs:
            return "allOf must reference one class"
        with self.state.lock:
            for ref in refs:
                if ref != EXPERIENCE_EVENT and ref not in self.registry.fieldgroups:
                    return f"Referenced field group {ref} was not found"
        return None

    def get_resource(self, kind: str, ref: str) -> Response:
        """``GET /tenant/fieldgroups|schemas/<id>``; ``xed-full`` resolves a schema's fields."""
        accept = request.headers.get("Accept", "")
        if "version=" not in accept.replace(" ", ""):
            return _xdm_error(400, "XDM-1006-400", "Accept header invalid", "Accept must name a version")
        with self.state.lock:
            resource = self._find(kind, ref)
            if resource is None:
                return _xdm_error(404, "XDM-1010-404", "Resource not found", f"{unquote(ref)} was not found")
            answer = copy.deepcopy(resource)
            if kind == "schemas" and "xed-full" in accept:
                answer["properties"] = resolved_properties(self.registry, resource)
        return json_reply(answer, 200)

    def patch_resource(self, kind: str, ref: str) -> Response:
        """``PATCH /tenant/fieldgroups|schemas/<id>``: JSON Patch ``add``/``replace``/``remove``."""
        ops = request.get_json()
        if not isinstance(ops, list):
            return _xdm_error(400, "XDM-1000-400", "Bad Request", "The body must be a JSON Patch array")
        with self.state.lock:
            resource = self._find(kind, ref)
            if resource is None:
                return _xdm_error(404, "XDM-1010-404", "Resource not found", f"{unquote(ref)} was not found")
            patched = copy.deepcopy(resource)
            try:
                for op in ops:
                    _apply_patch(patched, op)
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                return _xdm_error(400, "XDM-1000-400", "Bad Request", f"JSON Patch failed: {exc}")
            union = "union" in patched.get("meta:immutableTags", [])
            if kind == "schemas" and union and not self._has_identity(patched):
                detail = (
                    "To participate in a union, a schema must include an identityMap fieldgroup"
                    " or a primary identity descriptor."
                )
                return _xdm_error(400, "XDM-1528-400", "Union error", detail)
            if kind == "schemas":
                patched["meta:extends"] = [p["$ref"] for p in patched.get("allOf", []) if "$ref" in p]
            major, _, minor = str(patched["version"]).partition(".")
            patched["version"] = f"{major}.{int(minor or 0) + 1}"
            self._resources(kind)[resource["$id"]] = patched
            return json_reply(copy.deepcopy(patched), 200)

    def _has_identity(self, schema: dict[str, Any]) -> bool:
        # The ExperienceEvent class brings identityMap (its meta:extends lists context/identitymap).
        if schema.get("meta:class") == EXPERIENCE_EVENT:
            return True
        return any(
            d["xdm:sourceSchema"] == schema["$id"] and d.get("xdm:isPrimary")
            for d in self.registry.descriptors.values()
        )

    def list_descriptors(self) -> Response:
        """``GET /tenant/descriptors``: full objects with ``xdm+json``, else paths, grouped by type."""
        accept = request.headers.get("Accept", "")
        with self.state.lock:
            found = list(self.registry.descriptors.values())
        if "xdm-v2" in accept:
            return json_reply(
                {"results": copy.deepcopy(found), "_page": {"count": len(found), "next": None}}, 200
            )
        grouped: dict[str, list[Any]] = {}
        for descriptor in found:
            item = (
                copy.deepcopy(descriptor)
                if "vnd.adobe.xdm+json" in accept
                else f"/tenant/descriptors/{descriptor['@id']}"
            )
            grouped.setdefault(descriptor["@type"], []).append(item)
        return json_reply(grouped, 200)

    def create_descriptor(self) -> Response:
        """``POST /tenant/descriptors``: 201 with the descriptor and its ``@id``."""
        body = request.get_json()
        required = ("@type", "xdm:sourceSchema", "xdm:sourceVersion", "xdm:sourceProperty")
        missing = [name for name in required if not isinstance(body, dict) or name not in body]
        if missing:
            return _xdm_error(400, "XDM-1000-400", "Bad Request", f"{', '.join(missing)} is required")
        with self.state.lock:
            schema = self.registry.schemas.get(body["xdm:sourceSchema"])
            if schema is None:
                return _xdm_error(
                    404, "XDM-1010-404", "Resource not found", f"{body['xdm:sourceSchema']} was not found"
                )
            path = [p for p in body["xdm:sourceProperty"].split("/") if p]
            node: Any = {"properties": resolved_properties(self.registry, schema)}
            for part in path:
                node = (node.get("properties") or {}).get(part) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                detail = f"xdm:sourceProperty {body['xdm:sourceProperty']} is not a field of the schema"
                return _xdm_error(400, "XDM-1000-400", "Bad Request", detail)
            if body.get("xdm:isPrimary") and any(
                d["xdm:sourceSchema"] == schema["$id"] and d.get("xdm:isPrimary")
                for d in self.registry.descriptors.values()
            ):
                return _xdm_error(
                    400, "XDM-1000-400", "Bad Request", "The schema already has a primary identity"
                )
            descriptor = {
                **copy.deepcopy(body),
                "meta:containerId": "tenant",
                "@id": self.registry.new_hex(40),
            }
            self.registry.descriptors[descriptor["@id"]] = descriptor
            return json_reply(copy.deepcopy(descriptor), 201)

    # --- Catalog ------------------------------------------------------------------------------

    def list_datasets(self) -> Response:
        """``GET /catalog/dataSets?property=name==X`` (or ``name=X``): an id-keyed object."""
        condition = _filter(request.args) or (
            ("name", request.args["name"]) if "name" in request.args else None
        )
        with self.state.lock:
            found = {i: copy.deepcopy(d) for i, d in self.registry.datasets.items() if _matches(d, condition)}
        return json_reply(found, 200)

    def get_dataset(self, dataset_id: str) -> Response:
        """``GET /catalog/dataSets/<id>``."""
        with self.state.lock:
            dataset = self.registry.datasets.get(dataset_id)
            if dataset is None:
                return _service_error(404, "404", f"Dataset {dataset_id} was not found")
            return json_reply({dataset_id: copy.deepcopy(dataset)}, 200)

    def create_dataset(self) -> Response:
        """``POST /catalog/dataSets``: 201 ``["@/dataSets/<id>"]``."""
        body = request.get_json()
        ref = body.get("schemaRef") if isinstance(body, dict) else None
        if not isinstance(body.get("name"), str) or not isinstance(ref, dict):
            return _service_error(400, "400", "name and schemaRef are required")
        with self.state.lock:
            schema = self.registry.schemas.get(str(ref.get("id")))
            if schema is None:
                return _service_error(400, "400", f"Schema {ref.get('id')} was not found")
            profile = "enabled:true" in (body.get("tags") or {}).get("unifiedProfile", [])
            if profile and "union" not in schema.get("meta:immutableTags", []):
                return _service_error(400, "400", "To enable profile datasets the schema should be valid")
            dataset_id = self.registry.new_hex(24)
            self.registry.datasets[dataset_id] = {**copy.deepcopy(body), "created": int(time.time() * 1000)}
        return json_reply([f"@/dataSets/{dataset_id}"], 201)

    # --- Flow Service -------------------------------------------------------------------------

    def _flow_records(self, kind: str) -> dict[str, dict[str, Any]]:
        return {
            "connections": self.registry.connections,
            "sourceConnections": self.registry.source_connections,
            "targetConnections": self.registry.target_connections,
            "flows": self.registry.flows,
        }[kind]

    def list_flow_records(self, kind: str) -> Response:
        """``GET /flowservice/<kind>?property=path==X``: ``{"items": [...]}``."""
        condition = _filter(request.args)
        with self.state.lock:
            items = [copy.deepcopy(r) for r in self._flow_records(kind).values() if _matches(r, condition)]
        return json_reply({"items": items}, 200)

    def get_flow_record(self, kind: str, record_id: str) -> Response:
        """``GET /flowservice/<kind>/<id>``: one record, still wrapped in ``items``."""
        with self.state.lock:
            record = self._flow_records(kind).get(record_id)
            if record is None:
                return _service_error(404, "1101-404", f"Entity {record_id} not found")
            return json_reply({"items": [copy.deepcopy(record)]}, 200)

    def create_flow_record(self, kind: str) -> Response:
        """``POST /flowservice/<kind>``: 201 ``{"id", "etag"}``."""
        body = request.get_json()
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return _service_error(400, "1100-400", "name is required")
        with self.state.lock:
            problem = self._check_flow_record(kind, body)
            if problem:
                return _service_error(400, "1100-400", problem)
            record_id = str(uuid.uuid4())
            record = {**copy.deepcopy(body), "id": record_id, "state": "enabled", "etag": f'"{uuid.uuid4()}"'}
            if kind == "connections":
                inlet = self.registry.new_hex(64)
                params = record["auth"]["params"]
                params.update(inletId=inlet, inletUrl=f"{request.host_url}collection/{inlet}")
                params.setdefault("sourceId", params.get("name"))
            self._flow_records(kind)[record_id] = record
        return json_reply({"id": record_id, "etag": record["etag"]}, 201)

    def _check_flow_record(self, kind: str, body: dict[str, Any]) -> str | None:
        spec = (body.get("connectionSpec") or {}).get("id")
        if kind == "connections":
            params = ((body.get("auth") or {}).get("params")) or {}
            if spec != HTTP_API_SPEC or params.get("dataType") not in ("xdm", "raw"):
                return "connectionSpec must be the HTTP API's and auth.params.dataType xdm or raw"
        elif kind == "sourceConnections":
            if body.get("baseConnectionId") not in self.registry.connections:
                return f"Base connection {body.get('baseConnectionId')} not found"
        elif kind == "targetConnections":
            dataset = (body.get("params") or {}).get("dataSetId")
            if spec != DATA_LAKE_SPEC or dataset not in self.registry.datasets:
                return f"connectionSpec must be the data lake's and params.dataSetId a dataset ({dataset})"
        else:
            if (body.get("flowSpec") or {}).get("id") not in FLOW_SPECS:
                return "flowSpec must be one of the HTTP API's"
            sources = body.get("sourceConnectionIds") or []
            targets = body.get("targetConnectionIds") or []
            if not all(s in self.registry.source_connections for s in sources) or not sources:
                return "sourceConnectionIds name no source connection"
            if not all(t in self.registry.target_connections for t in targets) or not targets:
                return "targetConnectionIds name no target connection"
            for step in body.get("transformations") or []:
                mapping_id = (step.get("params") or {}).get("mappingId")
                if step.get("name") == "Mapping" and mapping_id not in self.registry.mapping_sets:
                    return f"Mapping set {mapping_id} not found"
        return None

    # --- Data Prep ----------------------------------------------------------------------------

    def list_mapping_sets(self) -> Response:
        """``GET /conversion/mappingSets?limit=&start=``: ``{"data": [...], "_page": ...}``."""
        with self.state.lock:
            data = [copy.deepcopy(m) for m in self.registry.mapping_sets.values()]
        return json_reply({"data": data, "_page": {"count": len(data), "limit": len(data)}}, 200)

    def create_mapping_set(self) -> Response:
        """``POST /conversion/mappingSets``: 200 (not 201) with ``id`` and ``version``."""
        body = request.get_json()
        ref = ((body.get("outputSchema") or {}).get("schemaRef") or {}) if isinstance(body, dict) else {}
        if not isinstance(body.get("mappings"), list) or not ref.get("id"):
            return _service_error(400, "400", "outputSchema.schemaRef and mappings are required")
        now = int(time.time() * 1000)
        with self.state.lock:
            if ref["id"] not in self.registry.schemas:
                return _service_error(400, "400", f"Schema {ref['id']} was not found")
            mapping_id = self.registry.new_hex(32)
            answer = {"id": mapping_id, "version": 0, "createdDate": now, "modifiedDate": now}
            self.registry.mapping_sets[mapping_id] = {**copy.deepcopy(body), **answer}
        return json_reply(answer, 200)


def resolved_properties(registry: Registry, schema: dict[str, Any]) -> dict[str, Any]:
    """A schema's fields as ``xed-full`` answers them: the class's, then each field group's."""
    properties: dict[str, Any] = {
        "_id": {"type": "string", "title": "Identifier"},
        "timestamp": {"type": "string", "format": "date-time", "title": "Timestamp"},
        "eventType": {"type": "string", "title": "Event Type"},
        "identityMap": {
            "type": "object",
            "title": "Identity Map",
            "additionalProperties": {"type": "array", "items": {"type": "object"}},
        },
    }
    for part in schema.get("allOf", []):
        group = registry.fieldgroups.get(part.get("$ref", ""))
        if group is None:
            continue
        for definition in (group.get("definitions") or {}).values():
            _merge(properties, copy.deepcopy(definition.get("properties") or {}))
    return properties


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for name, spec in extra.items():
        current = into.get(name)
        if isinstance(current, dict) and current.get("type") == "object" and spec.get("type") == "object":
            _merge(current.setdefault("properties", {}), spec.get("properties") or {})
        else:
            into[name] = spec


def _apply_patch(document: dict[str, Any], op: dict[str, Any]) -> None:
    """One RFC 6902 operation (add, replace, remove) on ``document``, in place."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in str(op["path"]).split("/")[1:]]
    if not parts:
        raise ValueError("the path must not be the root")
    parent: Any = document
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last, kind = parts[-1], op["op"]
    if isinstance(parent, list):
        if kind == "add":
            parent.insert(len(parent) if last == "-" else int(last), copy.deepcopy(op["value"]))
        elif kind == "replace":
            parent[int(last)] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del parent[int(last)]
        else:
            raise ValueError(f"unsupported op {kind!r}")
        return
    if kind in ("add", "replace"):
        if kind == "replace" and last not in parent:
            raise KeyError(last)
        parent[last] = copy.deepcopy(op["value"])
    elif kind == "remove":
        del parent[last]
    else:
        raise ValueError(f"unsupported op {kind!r}")


def add_routes(app: Flask, platform: Platform) -> None:
    """Register the Platform API routes on the sandbox app."""
    sr, fs = f"{_BASE}/schemaregistry", f"{_BASE}/flowservice"
    app.before_request(platform.gate)
    app.add_url_rule(f"{sr}/stats", "sr_stats", platform.stats)
    for kind in ("fieldgroups", "schemas"):
        app.add_url_rule(f"{sr}/tenant/{kind}", f"sr_list_{kind}", lambda k=kind: platform.list_resources(k))
        app.add_url_rule(
            f"{sr}/tenant/{kind}",
            f"sr_create_{kind}",
            lambda k=kind: platform.create_resource(k),
            methods=["POST"],
        )
        app.add_url_rule(
            f"{sr}/tenant/{kind}/<path:ref>",
            f"sr_get_{kind}",
            lambda ref, k=kind: platform.get_resource(k, ref),
        )
        app.add_url_rule(
            f"{sr}/tenant/{kind}/<path:ref>",
            f"sr_patch_{kind}",
            lambda ref, k=kind: platform.patch_resource(k, ref),
            methods=["PATCH"],
        )
    app.add_url_rule(f"{sr}/tenant/descriptors", "sr_descriptors", platform.list_descriptors)
    app.add_url_rule(
        f"{sr}/tenant/descriptors", "sr_new_descriptor", platform.create_descriptor, methods=["POST"]
    )
    app.add_url_rule(f"{_BASE}/catalog/dataSets", "cat_list", platform.list_datasets)
    app.add_url_rule(f"{_BASE}/catalog/dataSets", "cat_create", platform.create_dataset, methods=["POST"])
    app.add_url_rule(f"{_BASE}/catalog/dataSets/<dataset_id>", "cat_get", platform.get_dataset)
    for kind in ("connections", "sourceConnections", "targetConnections", "flows"):
        app.add_url_rule(f"{fs}/{kind}", f"fs_list_{kind}", lambda k=kind: platform.list_flow_records(k))
        app.add_url_rule(
            f"{fs}/{kind}",
            f"fs_create_{kind}",
            lambda k=kind: platform.create_flow_record(k),
            methods=["POST"],
        )
        app.add_url_rule(
            f"{fs}/{kind}/<record_id>",
            f"fs_get_{kind}",
            lambda record_id, k=kind: platform.get_flow_record(k, record_id),
        )
    app.add_url_rule(f"{_BASE}/conversion/mappingSets", "dp_list", platform.list_mapping_sets)
    app.add_url_rule(
        f"{_BASE}/conversion/mappingSets", "dp_create", platform.create_mapping_set, methods=["POST"]
    )
