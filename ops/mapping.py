"""``rainbridge mapping``: check, try and test a mapping file; print the default, its schema, its export."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from shared import redisconn
from shared.push import xdm_time
from shared.settings import load_or_exit
from worker import mapfile, schema, unmapped
from worker.errors import InvalidPush
from worker.transform import map_event
from worker.validate import validate


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``mapping`` and its subcommands on the ``rainbridge`` command's subparsers."""
    parser = subparsers.add_parser(
        "mapping",
        help="check, try and test a mapping file (MAPPING_FILE)",
        description="Work with a mapping file: the push -> XDM mapping in AEP Data Prep's vocabulary.",
    )
    commands = parser.add_subparsers(dest="mapping_command", required=True)
    p_check = commands.add_parser("check", help="report every problem of a mapping file as FILE:LINE: what")
    p_check.add_argument("file")
    p_try = commands.add_parser("try", help="map one push (a JSON file) and print the xdmEntity")
    p_try.add_argument("file")
    p_try.add_argument("push", help="a file holding one push as JSON ('-' for standard input)")
    p_try.add_argument("--tenant", help="the AEP tenant id (default: AEP_TENANT_ID)")
    p_test = commands.add_parser(
        "test", help="run the file's tests: and print a field-by-field diff per failure"
    )
    p_test.add_argument("file")
    p_test.add_argument("--tenant", help="the AEP tenant id (default: AEP_TENANT_ID)")
    p_schema = commands.add_parser(
        "schema",
        help="print the tenant field group and identity descriptor, as AEP's Schema Registry takes them",
    )
    p_schema.add_argument("file")
    p_schema.add_argument("--tenant", help="the AEP tenant id (default: AEP_TENANT_ID)")
    p_schema.add_argument("--schema-id", help="the schema's $id, for the descriptor (default: AEP_SCHEMA_ID)")
    p_export = commands.add_parser("export", help="print an AEP Data Prep mapping set for the same mapping")
    p_export.add_argument("file")
    p_export.add_argument(
        "--data-prep", action="store_true", required=True, help="the export format (the only one)"
    )
    p_export.add_argument("--tenant", help="the AEP tenant id (default: AEP_TENANT_ID)")
    p_export.add_argument("--schema-id", help="the target schema's $id (default: AEP_SCHEMA_ID)")
    commands.add_parser("default", help="print the built-in mapping for IDENTITY_NAMESPACE")
    p_unmapped = commands.add_parser(
        "unmapped", help="source paths seen in pushes that no mapping entry reads (paths only, never values)"
    )
    p_unmapped.add_argument("--json", action="store_true", help="print one JSON object per line")
    p_unmapped.add_argument("--forget", action="store_true", help="empty the table after showing it")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run a ``mapping`` subcommand; the exit status."""
    command = args.mapping_command
    if command == "default":
        print(mapfile.default_text(load_or_exit().identity_namespace), end="")
        return 0
    if command == "unmapped":
        return _unmapped(as_json=args.json, forget=args.forget)
    mapping = _load(args.file)
    if mapping is None:
        return 1
    if command == "check":
        overrides = ", ".join(sorted(mapping.overrides)) or "none"
        print(
            f"{args.file}: OK (mapping {mapping.digest}: {len(mapping.identities)} identities, "
            f"{len(mapping.fields)} fields, overrides for {overrides}, {len(mapping.tests)} tests)"
        )
        return 0
    settings = load_or_exit()
    tenant = args.tenant or settings.aep_tenant_id or "tenant"
    mapping = mapping.resolve(tenant)
    if command in ("schema", "export"):
        schema_id = (
            args.schema_id or settings.aep_schema_id or "https://ns.adobe.com/TENANT/schemas/SCHEMA_ID"
        )
        if command == "export":
            print(json.dumps(schema.mapping_set(mapping, schema_id), indent=2, ensure_ascii=False))
            return 0
        descriptor = schema.identity_descriptor(mapping, tenant, schema_id)
        out = {"fieldGroup": schema.field_group(mapping, tenant), "identityDescriptor": descriptor}
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    if command == "try":
        return _try(mapping, args.push)
    return _test(mapping, tenant)


def _unmapped(*, as_json: bool, forget: bool) -> int:
    settings = load_or_exit()
    client = redisconn.connect(settings)
    try:
        rows, overflow = unmapped.read(client)
        if forget:
            unmapped.forget(client)
    except redis.RedisError as exc:
        print(
            f"rainbridge: Redis at {settings.redacted()['REDIS_URL']} is unreachable: {exc}", file=sys.stderr
        )
        return 1
    if as_json:
        for row in rows:
            first, last = xdm_time_ms(row.first_ms), xdm_time_ms(row.last_ms)
            print(json.dumps({"path": row.path, "count": row.count, "firstSeen": first, "lastSeen": last}))
        return 0
    if not rows:
        print("no unmapped source paths: every field pushes carried is read by the mapping")
        return 0
    width = max(len(row.path) for row in rows)
    print(f"{'path':<{width}}  {'pushes':>8}  {'first seen':<24}  last seen")
    for row in rows:
        first, last = xdm_time_ms(row.first_ms), xdm_time_ms(row.last_ms)
        print(f"{row.path:<{width}}  {row.count:>8}  {first:<24}  {last}")
    if overflow:
        print(f"(and {overflow} occurrence(s) of further paths: the table keeps {unmapped.LIMIT} at most)")
    return 0


def xdm_time_ms(ms: int) -> str:
    """A time in ms as ``YYYY-MM-DDTHH:MM:SS.sssZ``."""
    return xdm_time(datetime.fromtimestamp(ms / 1000, UTC))


def _load(path: str) -> mapfile.Mapping | None:
    try:
        return mapfile.load(path)
    except mapfile.MappingError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return None


def _try(mapping: mapfile.Mapping, path: str) -> int:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        raw = json.loads(text)
    except (OSError, ValueError) as exc:
        print(f"rainbridge: cannot read a push from {path}: {exc}", file=sys.stderr)
        return 2
    outcome = outcome_of(mapping, raw)
    if isinstance(outcome, InvalidPush):
        print(f"invalid_payload: {json.dumps(outcome.detail, ensure_ascii=False)}")
        return 1
    print(json.dumps(outcome, indent=2, ensure_ascii=False))
    return 0


def outcome_of(mapping: mapfile.Mapping, raw: Any) -> dict[str, Any] | InvalidPush:
    """The xdmEntity a push becomes, or why it is invalid (as ingest would dead-letter it)."""
    if not isinstance(raw, dict):
        return InvalidPush({"_schema": ["a push must be a JSON object"]})
    try:
        return map_event(validate(raw, require_email=mapping.needs_email), raw, mapping)
    except InvalidPush as exc:
        return exc


def _test(mapping: mapfile.Mapping, tenant: str) -> int:
    failures = 0
    for number, case in enumerate(mapping.tests, 1):
        outcome = outcome_of(mapping, case.push)
        where = f"{mapping.source}:{case.line}: test {number}"
        if case.invalid:
            if isinstance(outcome, InvalidPush):
                continue
            failures += 1
            print(f"{where}: expected invalid_payload, got an event:\n  {_show(outcome)}")
            continue
        expect = _with_tenant(case.expect, tenant)
        if isinstance(outcome, InvalidPush):
            failures += 1
            print(f"{where}: invalid_payload: {json.dumps(outcome.detail, ensure_ascii=False)}")
            continue
        lines = diff(expect, outcome)
        if lines:
            failures += 1
            print(f"{where}: the event differs")
            for line in lines:
                print(f"  {line}")
    total = len(mapping.tests)
    print(f"{total - failures} of {total} tests passed" + (f", {failures} failed" if failures else ""))
    return 1 if failures else 0


def _with_tenant(value: Any, tenant: str) -> Any:
    if isinstance(value, dict):
        return {
            (f"_{tenant}" if k == mapfile.TENANT else k): _with_tenant(v, tenant) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_with_tenant(v, tenant) for v in value]
    return value


def diff(expected: Any, actual: Any, pointer: str = "") -> list[str]:
    """Field-by-field differences as ``/json/pointer: expected X, got Y`` (missing, extra, changed)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in expected.keys() | actual.keys():
            here = f"{pointer}/{_escape(str(key))}"
            if key not in actual:
                out.append(f"{here}: missing (expected {_show(expected[key])})")
            elif key not in expected:
                out.append(f"{here}: not expected (got {_show(actual[key])})")
            else:
                out += diff(expected[key], actual[key], here)
        return sorted(out)
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [
            line
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for line in diff(e, a, f"{pointer}/{i}")
        ]
    if type(expected) is type(actual) and expected == actual:
        return []
    return [f"{pointer or '/'}: expected {_show(expected)}, got {_show(actual)}"]


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
