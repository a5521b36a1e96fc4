"""The ``rainbridge`` command: status, check, sandbox, and the dead-letter and mapping tools."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

import redis

from ops import aep, dlq, mapping
from shared import redisconn, status
from shared.settings import ConfigError, Role, Settings, load_or_exit


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rainbridge`` console script."""
    parser = argparse.ArgumentParser(prog="rainbridge", description="RainFocus → AEP event bridge")
    sub = parser.add_subparsers(dest="command", required=True)

    p_status = sub.add_parser("status", help="queue depths, pending work, dead letters, AEP pause and token")
    p_status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub.add_parser("check", help="check the configuration and Redis; exit non-zero on a problem")
    dlq.add_parser(sub)
    mapping.add_parser(sub)
    aep.add_parser(sub)
    sub.add_parser(
        "sandbox", help="run the local AEP stand-in (see rainbridge sandbox --help)", add_help=False
    )

    args, rest = parser.parse_known_args(argv)
    if args.command == "sandbox":
        from devkit.sandbox import main as sandbox_main  # noqa: PLC0415 - only this command needs it

        return sandbox_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "check":
        return check()
    if args.command == "dlq":
        return dlq.run(args)
    if args.command == "mapping":
        return mapping.run(args)
    if args.command == "aep":
        return aep.run(args)
    settings = load_or_exit()
    client = redisconn.connect(settings)
    try:
        return show_status(client, as_json=args.json)
    except redis.RedisError as exc:
        print(
            f"rainbridge: Redis at {settings.redacted()['REDIS_URL']} is unreachable: {exc}", file=sys.stderr
        )
        return 1


def show_status(client: redis.Redis, *, as_json: bool) -> int:
    """Print the pipeline's state."""
    state = status.collect(client)
    if as_json:
        print(json.dumps(state, indent=2))
        return 1 if any(drain["stalled"] for drain in state["drains"].values()) else 0
    print(f"{'stream':<10} {'depth':>8} {'pending':>8} {'consumers':>9} {'oldest age':>12}")
    for name in ("inbox", "outbox"):
        s = state[name]
        age = "-" if s["oldest_age_seconds"] is None else f"{s['oldest_age_seconds']:.1f}s"
        print(f"{name:<10} {s['depth']:>8} {s['pending']:>8} {s['consumers']:>9} {age:>12}")
    letters = state["deadletters"]
    by_reason = ", ".join(f"{r}: {n}" for r, n in letters["by_reason"].items()) or "none"
    print(f"dead letters: {letters['total']} ({by_reason})")
    paused = state["aep_paused_until_ms"]
    hosts = state["aep_hosts_backing_off"]
    backing_off = "".join(
        f"; {host} cannot reach AEP, backing off until {_iso(until)}" for host, until in hosts.items()
    )
    print("AEP delivery: " + (f"PAUSED until {_iso(paused)}" if paused else "running") + backing_off)
    print("drains: " + ", ".join(_drain_line(stage, d) for stage, d in state["drains"].items()))
    running = state["mappings"]
    shown = [f"{digest} ({m['source']}) on {m['processes']} process(es)" for digest, m in running.items()]
    unmapped = f"; {state['unmapped_paths']} unmapped path(s)" if state["unmapped_paths"] else ""
    print("mapping: " + (", ".join(shown) or "no worker has reported one") + unmapped)
    token = state["aep_token"]
    print(
        "AEP token: "
        + (
            f"expires in {token['expires_in_seconds']}s, renewed in {token['renews_in_seconds']}s"
            if token
            else "none cached"
        )
    )
    recent = state["delivery_latency"]
    if recent["events"]:
        print(
            f"delivery latency, receipt to AEP (last {recent['minutes']} min, {recent['events']} events):"
            f" p50 {recent['p50_seconds']}s, p99 {recent['p99_seconds']}s"
        )
    else:
        print(f"delivery latency: nothing delivered in the last {recent['minutes']} min")
    # A script (or a health check) can tell a stalled pipeline from the exit status alone.
    return 1 if any(drain["stalled"] for drain in state["drains"].values()) else 0


def check() -> int:
    """Check settings, Redis, the AEP token and inlet; print a verdict per line; non-zero on a failure."""
    failures = 0
    try:
        settings = Settings.from_env()
        print("ok    settings parse")
    except ConfigError as exc:
        print(f"FAIL  settings: {exc}")
        return 1
    roles: tuple[Role, ...] = ("receiver", "worker")
    for role in roles:
        try:
            settings.require(role)
            print(f"ok    settings complete for the {role}")
        except ConfigError as exc:
            print(f"FAIL  settings for the {role}: {exc}")
            failures += 1
    failures += _check_mapping(settings)
    client = redisconn.connect(settings)
    try:
        client.ping()
        print(f"ok    Redis reachable at {settings.redacted()['REDIS_URL']}")
        warnings = redisconn.durability_warnings(client)
        for warning in warnings:
            print(f"FAIL  {warning}")
        if not warnings:
            print("ok    Redis has appendonly yes and maxmemory-policy noeviction")
        failures += len(warnings)
    except redis.RedisError as exc:
        print(f"FAIL  Redis unreachable at {settings.redacted()['REDIS_URL']}: {exc}")
        print("verdict: Redis is needed for the rest of the checks")
        return 1
    if settings.aep_streaming_url:
        failures += _check_aep(settings, client)
    failures += _check_schema(settings)
    print("verdict: " + ("OK" if not failures else f"{failures} problem(s)"))
    return 1 if failures else 0


def _check_mapping(settings: Settings) -> int:
    """Load the mapping the workers would run; returns the failures."""
    from worker import mapfile  # noqa: PLC0415 - only this check needs the worker's mapping

    try:
        active = mapfile.for_settings(settings)
    except mapfile.MappingError as exc:
        for line in exc.lines():
            print(f"FAIL  mapping {line}")
        return 1
    source = settings.mapping_file or f"built-in for {settings.identity_namespace}"
    print(f"ok    mapping {active.digest} ({source})")
    return 0


def _check_aep(settings: Settings, client: redis.Redis) -> int:
    """Get a token (the cached one if still good) and knock on the inlet; returns the failures."""
    import requests  # noqa: PLC0415 - only this check talks to AEP

    from worker.aep import AepClient  # noqa: PLC0415
    from worker.errors import PipelineError  # noqa: PLC0415
    from worker.ims import TokenCache  # noqa: PLC0415

    with requests.Session() as session:
        tokens = TokenCache(client, settings, session) if settings.aep_credentials else None
        if tokens:
            try:
                tokens.get()
                print(f"ok    AEP token from {settings.aep_ims_url}")
            except PipelineError as exc:
                print(f"FAIL  AEP token: {exc}")
                return 1
        try:
            # An empty batch: AEP refuses it (400) on a known inlet and says 404 on an unknown one.
            resp = AepClient(settings, tokens, session).post(settings.aep_batch_url, '{"messages":[]}')
        except PipelineError as exc:
            print(f"FAIL  AEP inlet: {exc}")
            return 1
    if resp.status_code in (200, 207, 400):
        print(f"ok    AEP inlet answers ({resp.status_code} to an empty batch)")
        return 0
    print(f"FAIL  AEP inlet answered {resp.status_code}: {resp.text[:200]}")
    return 1


def _check_schema(settings: Settings) -> int:
    """Compare AEP's schema (AEP_SCHEMA_ID) with what the mapping writes; returns the failures."""
    import requests  # noqa: PLC0415 - only this check talks to the Platform API

    from worker import mapfile  # noqa: PLC0415
    from worker.errors import PipelineError  # noqa: PLC0415

    if not (settings.aep_credentials and settings.aep_schema_id and settings.aep_tenant_id):
        print(
            "skip  schema comparison (needs AEP_CLIENT_ID, AEP_CLIENT_SECRET, AEP_SCHEMA_ID, AEP_TENANT_ID)"
        )
        return 0
    try:
        mapping = mapfile.for_settings(settings)
    except mapfile.MappingError:
        return 0  # already reported by the mapping check
    try:
        with requests.Session() as session:
            problems = aep.live_schema_problems(settings, mapping, session)
    except (aep.AdobeError, PipelineError) as exc:
        print(f"FAIL  schema {settings.aep_schema_id}: {exc}")
        return 1
    for problem in problems:
        print(f"FAIL  schema: {problem}")
    if not problems:
        print(f"ok    schema {settings.aep_schema_id} has every field the mapping writes, with its type")
    return len(problems)


def _drain_line(stage: str, drain: dict[str, Any]) -> str:
    age = "never ran" if drain["age_seconds"] is None else f"ran {drain['age_seconds']:.1f}s ago"
    return f"{stage} {age}" + (" STALLED" if drain["stalled"] else "")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


if __name__ == "__main__":
    sys.exit(main())
