"""``rainbridge aep setup``: the schema, identity, dataset and streaming dataflow, made from the mapping.

Everything is found by name first and made only when missing, so a second ``--apply`` makes
nothing. ``--dry-run`` (the default) reads what exists and prints every write it would send.
Adobe's pages, next to each call below, by tag:

- GS: https://experienceleague.adobe.com/en/docs/experience-platform/xdm/api/getting-started
  (the four headers; ``$id`` and ``meta:altId``; Accept headers, a version on single lookups)
- FG: https://experienceleague.adobe.com/en/docs/experience-platform/xdm/api/field-groups
- SCH: https://experienceleague.adobe.com/en/docs/experience-platform/xdm/api/schemas
- DESC: https://experienceleague.adobe.com/en/docs/experience-platform/xdm/api/descriptors
- XAPP: https://experienceleague.adobe.com/en/docs/experience-platform/xdm/api/appendix
  (``property=title==X`` filters)
- CAT: https://experienceleague.adobe.com/en/docs/experience-platform/catalog/api/create-dataset,
  https://experienceleague.adobe.com/en/docs/experience-platform/catalog/datasets/enable-for-profile,
  https://experienceleague.adobe.com/en/docs/experience-platform/catalog/api/filter-data
- HTTP: https://experienceleague.adobe.com/en/docs/experience-platform/sources/api-tutorials/create/streaming/http
  (connection spec, flow specs, connections, inletUrl, source and target connections, dataflow)
- FSF: https://experienceleague.adobe.com/en/docs/experience-platform/dataflows/api/sort-and-filter
- DP: https://experienceleague.adobe.com/en/docs/experience-platform/data-prep/api/mapping-set

Where Adobe's pages disagree, the choice is said where it is made.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from shared.settings import ConfigError, Settings, exit_on_config_error
from worker import mapfile, schema
from worker.errors import PipelineError
from worker.ims import mint
from worker.schema import EXPERIENCE_EVENT, XED_CONTENT_TYPE

SR = "/data/foundation/schemaregistry"
FLOWS = "/data/foundation/flowservice"
# HTTP: the HTTP API source's connection spec, and the data lake's (the target connection).
HTTP_API_SPEC = "bc7b00d6-623a-4dfc-9fdb-f1240aeadaeb"
DATA_LAKE_SPEC = "c604ff05-7f1a-43c0-8e18-33bf874cb11c"
# HTTP lists two flow specs: "without transformations" for XDM and "with transformations", which a
# dataflow carrying a Data Prep mapping needs (raw). An older copy of the page calls the second
# the HTTP API's only flow spec; the newer one, followed here, gives each its use.
FLOW_SPEC_XDM = "d8a6f005-7eaf-4153-983e-e8574508b877"
FLOW_SPEC_RAW = "c1a19761-d2c7-4702-b9fa-fe91f0613e81"
ID_ONLY = "application/vnd.adobe.xed-id+json"
ONE_RESOURCE = "application/vnd.adobe.xed+json; version=1"


class AdobeError(Exception):
    """Adobe refused a call; the message is the one line to print."""


def pending(what: str) -> str:
    """The stand-in for an id a dry run does not have: the object would be made by ``--apply``."""
    return f"<{what}, made by --apply>"


def is_pending(value: str | None) -> bool:
    """True for a :func:`pending` stand-in."""
    return bool(value) and str(value).startswith("<")


def adobe_message(resp: requests.Response) -> str:
    """Adobe's own words from an error answer, whichever of its services' shapes it has."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:300] or resp.reason
    if not isinstance(body, dict):
        return json.dumps(body)[:300]
    report: dict[str, Any] = body["report"] if isinstance(body.get("report"), dict) else {}
    parts = [
        str(body.get("error_code") or ""),
        str(body.get("title") or ""),
        str(body.get("detail") or report.get("detailed-message") or report.get("message") or ""),
        str(body.get("message") or ""),
    ]
    code = str(body.get("type") or "").rsplit("/", 1)[-1]
    if code.startswith("XDM-"):
        parts.insert(0, code)
    return " ".join(part for part in parts if part) or resp.reason


@dataclass
class Platform:
    """Adobe's Platform API with the four headers (GS); writes are only printed unless ``apply``."""

    settings: Settings
    session: requests.Session
    token: str
    apply: bool
    say: Callable[[str], None]
    made: list[str] = field(default_factory=list)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The headers every Platform call carries (GS), plus ``extra``."""
        return {
            "Authorization": f"Bearer {self.token}",
            "x-api-key": self.settings.aep_client_id or "",
            "x-gw-ims-org-id": self.settings.aep_org_id or "",
            "x-sandbox-name": self.settings.aep_sandbox_name,
            **(extra or {}),
        }

    def url(self, path: str) -> str:
        """The full URL of ``path`` on AEP_PLATFORM_URL."""
        return self.settings.aep_platform_url.rstrip("/") + path

    def read(self, path: str, params: dict[str, str] | None = None, accept: str | None = None) -> Any:
        """A GET, sent in a dry run too (it changes nothing); the JSON answer."""
        extra = {"Accept": accept} if accept else None
        return self._send("GET", path, params=params, headers=self.headers(extra))

    def write(
        self, method: str, path: str, body: Any, what: str, content_type: str = "application/json"
    ) -> Any | None:
        """A POST/PATCH: sent with ``apply``, else printed with its body; the JSON answer or None."""
        if not self.apply:
            self.say(f"    would {method} {self.url(path)}")
            for line in json.dumps(body, indent=2).splitlines():
                self.say(f"      {line}")
            return None
        return self._send(
            method, path, body=body, headers=self.headers({"Content-Type": content_type}), made=what
        )

    def _send(self, method: str, path: str, made: str | None = None, **kwargs: Any) -> Any:
        body = kwargs.pop("body", None)
        data = None if body is None else json.dumps(body)
        try:
            resp = self.session.request(
                method, self.url(path), data=data, timeout=self.settings.aep_timeout_seconds, **kwargs
            )
        except requests.RequestException as exc:
            raise AdobeError(f"{method} {self.url(path)}: {type(exc).__name__}: {exc}") from None
        if resp.status_code >= 400:
            hint = ""
            if resp.status_code in (401, 403):
                hint = " (check AEP_CLIENT_ID, AEP_CLIENT_SECRET, AEP_ORG_ID and the credential's profile)"
            raise AdobeError(f"{method} {path} answered {resp.status_code}: {adobe_message(resp)}{hint}")
        if made is not None:
            self.made.append(made)  # Adobe took it, whatever its answer's body says next
        try:
            return resp.json()
        except ValueError:
            raise AdobeError(f"{method} {path} answered {resp.status_code} without JSON") from None


@dataclass
class Names:
    """The titles and names rainbridge gives what it makes, from ``--name``."""

    prefix: str

    @property
    def field_group(self) -> str:
        return f"{self.prefix} RainFocus fields"

    @property
    def schema(self) -> str:
        # Titles are unique across the Schema Registry's types (a field group's and a schema's too).
        return f"{self.prefix} RainFocus events"

    @property
    def dataset(self) -> str:
        return f"{self.prefix} RainFocus events"

    @property
    def connection(self) -> str:
        return f"{self.prefix} RainFocus HTTP API"

    @property
    def source(self) -> str:
        return f"{self.prefix} RainFocus source"

    @property
    def target(self) -> str:
        return f"{self.prefix} RainFocus target"

    @property
    def flow(self) -> str:
        return f"{self.prefix} RainFocus dataflow"


@dataclass
class Outcome:
    """What a run found or made: the values to put in the environment."""

    tenant: str = ""
    field_group: str = ""
    schema: str = ""
    dataset: str = ""
    connection: str = ""
    inlet_url: str = ""
    source: str = ""
    target: str = ""
    mapping_set: str = ""
    flow: str = ""
    changes: int = 0


class Setup:
    """The set-up steps, in Adobe's order: each finds its object by name, then makes or mends it."""

    def __init__(
        self, platform: Platform, mapping: mapfile.Mapping, names: Names, say: Callable[[str], None]
    ):
        self.api = platform
        self.mapping = mapping
        self.names = names
        self.say = say
        self.out = Outcome()
        self.raw = platform.settings.sends_raw

    def run(self) -> Outcome:
        """Every step; AdobeError at the first refusal."""
        self.tenant()
        self.field_group()
        self.schema()
        self.descriptor()
        self.profile()
        self.dataset()
        self.connection()
        self.source_connection()
        self.target_connection()
        self.flow()
        return self.out

    def _report(self, state: str, what: str, detail: str = "") -> None:
        if state != "exists":
            self.out.changes += 1
        self.say(f"  {state:<14} {what}" + (f" ({detail})" if detail else ""))

    @property
    def _made(self) -> str:
        return "created" if self.api.apply else "would create"

    # GS: GET /stats answers the org's tenant id.
    def tenant(self) -> None:
        stats = self.api.read(f"{SR}/stats")
        tenant = str(stats.get("tenantId") or "")
        if not tenant:
            raise AdobeError("GET /schemaregistry/stats answered no tenantId")
        configured = self.api.settings.aep_tenant_id
        if configured and configured != tenant:
            raise AdobeError(f"AEP_TENANT_ID is {configured!r}, but this organisation's tenant is {tenant!r}")
        self.out.tenant = tenant
        self.say(f"  {'exists':<14} tenant {tenant}")
        self.mapping = self.mapping.resolve(tenant)

    # FG: list by title (XAPP filter, id-only Accept), create with POST, add fields with JSON Patch.
    def field_group(self) -> None:
        title, tenant = self.names.field_group, self.out.tenant
        found = self.api.read(f"{SR}/tenant/fieldgroups", {"property": f"title=={title}"}, ID_ONLY)
        results = found.get("results") or []
        wanted = schema.field_group(self.mapping, tenant, title)
        if not results:
            answer = self.api.write("POST", f"{SR}/tenant/fieldgroups", wanted, f"field group {title!r}")
            self.out.field_group = answer["$id"] if answer else pending("field group")
            self._report(self._made, f"field group {title!r}", self.out.field_group)
            return
        group_id = str(results[0]["$id"])
        self.out.field_group = group_id
        group = self.api.read(f"{SR}/tenant/fieldgroups/{quote(group_id, safe='')}", accept=ONE_RESOURCE)
        ops = _field_additions(group, schema.tenant_properties(self.mapping, tenant), tenant)
        if not ops:
            self._report("exists", f"field group {title!r}", group_id)
            return
        self.api.write(
            "PATCH", f"{SR}/tenant/fieldgroups/{quote(group_id, safe='')}", ops, f"fields of {title!r}"
        )
        added = ", ".join(op["path"].rsplit("/", 1)[-1] for op in ops)
        state = "updated" if self.api.apply else "would update"
        self._report(state, f"field group {title!r}: add {added}", group_id)

    # SCH: list by title; create with the class and the field group in allOf; add a missing group.
    def schema(self) -> None:
        title = self.names.schema
        found = self.api.read(f"{SR}/tenant/schemas", {"property": f"title=={title}"}, ID_ONLY)
        results = found.get("results") or []
        group = self.out.field_group
        if not results:
            body = {
                "type": "object",
                "title": title,
                "description": "RainFocus attendee events streamed by rainbridge.",
                "allOf": [{"$ref": EXPERIENCE_EVENT}, {"$ref": group}],
            }
            answer = self.api.write("POST", f"{SR}/tenant/schemas", body, f"schema {title!r}")
            self.out.schema = answer["$id"] if answer else pending("schema")
            self._report(self._made, f"schema {title!r} (ExperienceEvent)", self.out.schema)
            return
        schema_id = str(results[0]["$id"])
        self.out.schema = schema_id
        live = self.api.read(f"{SR}/tenant/schemas/{quote(schema_id, safe='')}", accept=ONE_RESOURCE)
        refs = [part.get("$ref") for part in live.get("allOf", [])]
        if live.get("meta:class") not in (None, EXPERIENCE_EVENT) or EXPERIENCE_EVENT not in refs:
            raise AdobeError(f"schema {title!r} ({schema_id}) is not of the ExperienceEvent class")
        if group in refs:
            self._report("exists", f"schema {title!r}", schema_id)
            return
        ops = [
            {"op": "add", "path": "/meta:extends/-", "value": group},
            {"op": "add", "path": "/allOf/-", "value": {"$ref": group}},
        ]
        self.api.write("PATCH", f"{SR}/tenant/schemas/{quote(schema_id, safe='')}", ops, f"schema {title!r}")
        self._report(
            "updated" if self.api.apply else "would update", f"schema {title!r}: add the field group"
        )

    # DESC: the primary identity, when a tenant field holds it (events carry identityMap anyway).
    def descriptor(self) -> None:
        body = schema.identity_descriptor(self.mapping, self.out.tenant, self.out.schema)
        if body is None:
            self.say(
                f"  {'not needed':<14} identity descriptor (events carry identityMap, part of the class)"
            )
            return
        what = f"primary identity {body['xdm:namespace']} on {body['xdm:sourceProperty']}"
        if not is_pending(self.out.schema):
            listed = self.api.read(f"{SR}/tenant/descriptors", accept="application/vnd.adobe.xdm+json")
            for descriptor in listed.get("xdm:descriptorIdentity", []):
                same = isinstance(descriptor, dict) and descriptor.get("xdm:sourceSchema") == self.out.schema
                if same and descriptor.get("xdm:sourceProperty") == body["xdm:sourceProperty"]:
                    self._report("exists", what, str(descriptor.get("@id")))
                    return
        answer = self.api.write("POST", f"{SR}/tenant/descriptors", body, what)
        self._report(self._made, what, str(answer["@id"]) if answer else "")

    # SCH: "enable for Profile" adds the union tag with JSON Patch; tags are never removed.
    def profile(self) -> None:
        what = "Profile enabled on the schema (union tag)"
        tags: list[str] = []
        if not is_pending(self.out.schema):
            live = self.api.read(
                f"{SR}/tenant/schemas/{quote(self.out.schema, safe='')}", accept=ONE_RESOURCE
            )
            tags = list(live.get("meta:immutableTags") or [])
            if "union" in tags:
                self._report("exists", what)
                return
        ops = [{"op": "add", "path": "/meta:immutableTags", "value": [*tags, "union"]}]
        self.api.write("PATCH", f"{SR}/tenant/schemas/{quote(self.out.schema, safe='')}", ops, what)
        self._report("updated" if self.api.apply else "would update", what)

    # CAT: find by name (id-keyed answer), create enabled for Profile and Identity ("@/dataSets/<id>").
    def dataset(self) -> None:
        name = self.names.dataset
        found = self.api.read(
            "/data/foundation/catalog/dataSets",
            {"property": f"name=={name}", "properties": "name,schemaRef,tags"},
        )
        for dataset_id, dataset in (found or {}).items():
            have = (dataset.get("schemaRef") or {}).get("id")
            if have != self.out.schema and not is_pending(self.out.schema):
                raise AdobeError(
                    f"dataset {name!r} ({dataset_id}) holds schema {have}, not {self.out.schema}"
                )
            self.out.dataset = dataset_id
            self._report("exists", f"dataset {name!r}", dataset_id)
            return
        body = {
            "name": name,
            "schemaRef": {"id": self.out.schema, "contentType": XED_CONTENT_TYPE},
            # CAT (enable-for-profile): arrays holding "enabled:true"; the API reference writes
            # "enabled: true" with a space, the guides without; the guides' form is used.
            "tags": {"unifiedProfile": ["enabled:true"], "unifiedIdentity": ["enabled:true"]},
        }
        answer = self.api.write("POST", "/data/foundation/catalog/dataSets", body, f"dataset {name!r}")
        self.out.dataset = str(answer[0]).rsplit("/", 1)[-1] if answer else pending("dataset")
        self._report(self._made, f"dataset {name!r} (Profile and Identity enabled)", self.out.dataset)

    # HTTP: the authenticated HTTP API connection; its inletUrl comes from GET /connections/<id>.
    def connection(self) -> None:
        name = self.names.connection
        data_type = "raw" if self.raw else "xdm"
        found = self.api.read(f"{FLOWS}/connections", {"property": f"name=={name}"})
        items = found.get("items") or []
        if items:
            connection_id = str(items[0]["id"])
            have = ((items[0].get("auth") or {}).get("params") or {}).get("dataType")
            if have and have != data_type:
                why = f"takes {have} data, AEP_PAYLOAD_MODE is {data_type}"
                raise AdobeError(f"connection {name!r} ({connection_id}) {why}")
            self._report("exists", f"streaming connection {name!r}", connection_id)
        else:
            body = {
                "name": name,
                "description": "RainFocus events from rainbridge",
                "connectionSpec": {"id": HTTP_API_SPEC, "version": "1.0"},
                "auth": {
                    "specName": "Streaming Connection",
                    "params": {
                        "sourceId": name,
                        "dataType": data_type,
                        "name": name,
                        "authenticationRequired": True,
                    },
                },
            }
            answer = self.api.write("POST", f"{FLOWS}/connections", body, f"connection {name!r}")
            connection_id = str(answer["id"]) if answer else pending("connection")
            self._report(
                self._made, f"streaming connection {name!r} ({data_type}, authenticated)", connection_id
            )
        self.out.connection = connection_id
        if not is_pending(connection_id):
            live = self.api.read(f"{FLOWS}/connections/{connection_id}")
            params = ((live.get("items") or [{}])[0].get("auth") or {}).get("params") or {}
            self.out.inlet_url = str(params.get("inletUrl") or "")

    # HTTP: the source connection on that base connection (FSF: filter by baseConnectionId).
    def source_connection(self) -> None:
        name = self.names.source
        if not is_pending(self.out.connection):
            found = self.api.read(
                f"{FLOWS}/sourceConnections", {"property": f"baseConnectionId=={self.out.connection}"}
            )
            items = found.get("items") or []
            if items:
                self.out.source = str(items[0]["id"])
                self._report("exists", f"source connection {name!r}", self.out.source)
                return
        body = {
            "name": name,
            "description": "RainFocus events from rainbridge",
            "baseConnectionId": self.out.connection,
            "connectionSpec": {"id": HTTP_API_SPEC, "version": "1.0"},
        }
        answer = self.api.write("POST", f"{FLOWS}/sourceConnections", body, f"source connection {name!r}")
        self.out.source = str(answer["id"]) if answer else pending("source connection")
        self._report(self._made, f"source connection {name!r}", self.out.source)

    # HTTP: the data lake target on the dataset. FSF does not list `name` among the target
    # connection's filters but says any property filters; the dataset id is what must match.
    def target_connection(self) -> None:
        name = self.names.target
        if not is_pending(self.out.dataset):
            found = self.api.read(
                f"{FLOWS}/targetConnections", {"property": f"params.dataSetId=={self.out.dataset}"}
            )
            for item in found.get("items") or []:
                if (item.get("connectionSpec") or {}).get("id") == DATA_LAKE_SPEC:
                    self.out.target = str(item["id"])
                    self._report("exists", f"target connection {name!r}", self.out.target)
                    return
        body = {
            "name": name,
            "description": "The rainbridge dataset",
            # HTTP's newest copy has no data.format and the schema's version as Accept form.
            "data": {"schema": {"id": self.out.schema, "version": XED_CONTENT_TYPE}},
            "params": {"dataSetId": self.out.dataset},
            "connectionSpec": {"id": DATA_LAKE_SPEC, "version": "1.0"},
        }
        answer = self.api.write("POST", f"{FLOWS}/targetConnections", body, f"target connection {name!r}")
        self.out.target = str(answer["id"]) if answer else pending("target connection")
        self._report(self._made, f"target connection {name!r}", self.out.target)

    # HTTP: the dataflow; for raw data it carries the Data Prep mapping set (DP) as "Mapping".
    def flow(self) -> None:
        name = self.names.flow
        found = self.api.read(f"{FLOWS}/flows", {"property": f"name=={name}"})
        items = found.get("items") or []
        if items:
            flow = items[0]
            self.out.flow = str(flow["id"])
            if self.out.source not in flow.get("sourceConnectionIds", []) and not is_pending(self.out.source):
                raise AdobeError(f"dataflow {name!r} ({self.out.flow}) reads another source connection")
            self._report("exists", f"dataflow {name!r}", self.out.flow)
            return
        body: dict[str, Any] = {
            "name": name,
            "description": "RainFocus events from rainbridge into the dataset",
            "flowSpec": {"id": FLOW_SPEC_RAW if self.raw else FLOW_SPEC_XDM, "version": "1.0"},
            "sourceConnectionIds": [self.out.source],
            "targetConnectionIds": [self.out.target],
        }
        if self.raw:
            mappings = schema.mapping_set(self.mapping, self.out.schema)
            # DP documents this body and a 200 answer with id and version.
            answer = self.api.write(
                "POST", "/data/foundation/conversion/mappingSets", mappings, "mapping set"
            )
            self.out.mapping_set = str(answer["id"]) if answer else pending("mapping set")
            version = int(answer.get("version", 0)) if answer else 0
            self._report(self._made, "Data Prep mapping set (from the mapping file)", self.out.mapping_set)
            body["transformations"] = [
                {"name": "Mapping", "params": {"mappingId": self.out.mapping_set, "mappingVersion": version}}
            ]
        answer = self.api.write("POST", f"{FLOWS}/flows", body, f"dataflow {name!r}")
        self.out.flow = str(answer["id"]) if answer else pending("dataflow")
        self._report(self._made, f"dataflow {name!r}", self.out.flow)


def _field_additions(group: dict[str, Any], wanted: dict[str, Any], tenant: str) -> list[dict[str, Any]]:
    """JSON Patch ``add`` operations for the fields ``wanted`` has and the field group lacks.

    A field already there with another type cannot be changed (AEP refuses breaking changes to a
    schema in use): that is an AdobeError naming it.
    """
    key = f"_{tenant}"
    definitions = group.get("definitions") or {}
    holder = next((name for name, d in definitions.items() if key in (d.get("properties") or {})), None)
    if holder is None:
        raise AdobeError(f"field group {group.get('title')!r} has no {key} object to add fields to")
    live = definitions[holder]["properties"][key].get("properties") or {}
    _, mistyped = schema.differences(wanted, live, key)
    if mistyped:
        raise AdobeError(
            "the field group types a field differently from the mapping, and AEP does not allow a field's"
            f" type to change: {'; '.join(mistyped)}. Write it to another destination."
        )
    ops: list[dict[str, Any]] = []

    def walk(want: dict[str, Any], have: dict[str, Any], pointer: str) -> None:
        for name, spec in want.items():
            if name not in have:
                ops.append({"op": "add", "path": f"{pointer}/{name}", "value": spec})
            elif spec.get("type") == "object":
                walk(spec["properties"], have[name].get("properties") or {}, f"{pointer}/{name}/properties")

    walk(wanted, live, f"/definitions/{holder}/properties/{key}/properties")
    return ops


def env_lines(settings: Settings, out: Outcome) -> list[str]:
    """The AEP_* lines to put in the environment."""
    lines = {
        "AEP_STREAMING_URL": out.inlet_url,
        "AEP_FLOW_ID": out.flow,
        "AEP_DATASET_ID": out.dataset,
        "AEP_SCHEMA_ID": out.schema,
        "AEP_TENANT_ID": out.tenant,
    }
    return [
        f"{name}={value}" if value and not is_pending(value) else f"{name}=  # made by --apply"
        for name, value in lines.items()
    ]


def _masked(value: str | None) -> str:
    if not value:
        return "(not set)"
    return value[:4] + "…" if len(value) > 8 else "…"


def setup(settings: Settings, *, apply: bool, prefix: str, say: Callable[[str], None] = print) -> int:
    """Run the set-up; 0 when everything exists (or was made), 1 at Adobe's first refusal."""
    if not settings.aep_credentials or not settings.aep_org_id:
        say("FAIL  aep setup needs AEP_CLIENT_ID, AEP_CLIENT_SECRET and AEP_ORG_ID")
        return 1
    try:
        mapping = mapfile.unresolved_for_settings(settings)  # resolved once the tenant is known
    except mapfile.MappingError as exc:
        for line in exc.lines():
            say(f"FAIL  mapping {line}")
        return 1
    mode = "apply" if apply else "dry run: reads are sent, writes are only printed"
    say(f"rainbridge aep setup ({mode}) on {settings.aep_platform_url}, sandbox {settings.aep_sandbox_name}")
    say(
        f"  headers on every call: Authorization: Bearer …, x-api-key: {_masked(settings.aep_client_id)},"
        f" x-gw-ims-org-id: {settings.aep_org_id}, x-sandbox-name: {settings.aep_sandbox_name}"
    )
    source = settings.mapping_file or "built-in"
    say(f"  mapping {mapping.digest} ({source}); payload mode {settings.aep_payload_mode}")
    with requests.Session() as session:
        try:
            token = mint(settings, session)
        except PipelineError as exc:
            say(f"FAIL  AEP token: {exc}")
            return 1
        platform = Platform(settings, session, token.value, apply, say)
        steps = Setup(platform, mapping, Names(prefix), say)
        try:
            out = steps.run()
        except (AdobeError, mapfile.MappingError, KeyError, IndexError, TypeError, AttributeError) as exc:
            # An answer of a shape Adobe's pages do not show is one line too, not a traceback.
            say(
                f"FAIL  {exc}"
                if isinstance(exc, AdobeError)
                else f"FAIL  unexpected answer from AEP: {exc!r}"
            )
            if platform.made:
                say("made before the failure (left in AEP): " + "; ".join(platform.made))
            else:
                say("nothing was made in AEP")
            return 1
    if not out.changes:
        say("nothing to do: everything exists as the mapping needs it")
    elif not apply:
        say(f"{out.changes} change(s) to make: run again with --apply")
    else:
        say(f"made {out.changes} change(s) in AEP")
    say("set these (the AEP_STREAMING_URL is the inlet; rainbridge sends batches to its /batch/ form):")
    for line in env_lines(settings, out):
        say(line)
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``aep setup`` on the ``rainbridge`` command's subparsers."""
    parser = subparsers.add_parser(
        "aep",
        help="set AEP up for rainbridge (schema, dataset, streaming dataflow)",
        description=__doc__.splitlines()[0],
    )
    commands = parser.add_subparsers(dest="aep_command", required=True)
    p_setup = commands.add_parser(
        "setup",
        help="find or make the schema, identity, dataset, connection and dataflow; print the AEP_* lines",
    )
    mode = p_setup.add_mutually_exclusive_group()
    mode.add_argument(
        "--dry-run", action="store_true", help="read, and print each write it would send (default)"
    )
    mode.add_argument("--apply", action="store_true", help="make what is missing")
    p_setup.add_argument(
        "--name", default="rainbridge", help="the prefix of every name it gives (default rainbridge)"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``rainbridge aep <command>``."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        exit_on_config_error(exc)
    return setup(settings, apply=bool(args.apply), prefix=args.name, say=lambda line: print(line, flush=True))


def live_schema_problems(
    settings: Settings, mapping: mapfile.Mapping, session: requests.Session
) -> list[str]:
    """Every destination the mapping writes that AEP's schema (AEP_SCHEMA_ID) lacks or types differently."""
    token = mint(settings, session)
    platform = Platform(settings, session, token.value, apply=False, say=lambda _line: None)
    schema_id = settings.aep_schema_id or ""
    # GS: xed-full resolves the class's and field groups' fields into `properties`.
    live = platform.read(
        f"{SR}/tenant/schemas/{quote(schema_id, safe='')}",
        accept="application/vnd.adobe.xed-full+json; version=1",
    )
    tenant = settings.aep_tenant_id or ""
    key = f"_{tenant}"
    have = ((live.get("properties") or {}).get(key) or {}).get("properties") or {}
    missing, mistyped = schema.differences(schema.tenant_properties(mapping, tenant), have, key)
    return [f"the schema lacks {path}, which the mapping writes" for path in missing] + mistyped
