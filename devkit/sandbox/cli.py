"""``rainbridge sandbox`` / ``python -m devkit.sandbox``: run the sandbox until interrupted."""

from __future__ import annotations

import argparse
import ipaddress
import sys
import threading

from devkit.sandbox.config import SandboxConfig
from devkit.sandbox.server import SandboxServer


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox until interrupted (``rainbridge sandbox``)."""
    defaults = SandboxConfig()
    parser = argparse.ArgumentParser(
        prog="rainbridge sandbox", description="Local stand-in for Adobe IMS + AEP."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--client-id", default=defaults.client_id)
    parser.add_argument("--client-secret", default=defaults.client_secret)
    parser.add_argument("--inlet-id", default=defaults.inlet_id)
    parser.add_argument("--org-id", default=defaults.org_id)
    parser.add_argument("--token-ttl", type=int, default=defaults.token_ttl, help="token lifetime in seconds")
    parser.add_argument("--no-auth", action="store_true", help="inlet accepts requests without a token")
    parser.add_argument("--no-store-bodies", action="store_true", help="keep only ids (long benchmarks)")
    parser.add_argument("--username", help="HTTP Basic user for the page and /sandbox/ routes")
    parser.add_argument("--password", help="HTTP Basic password for the page and /sandbox/ routes")
    args = parser.parse_args(argv)
    if not _is_loopback(args.host) and not (args.username and args.password):
        print(
            f"sandbox: refusing to listen on {args.host} without --username and --password", file=sys.stderr
        )
        return 2
    try:
        config = SandboxConfig(
            client_id=args.client_id,
            client_secret=args.client_secret,
            inlet_id=args.inlet_id,
            org_id=args.org_id,
            authenticated=not args.no_auth,
            token_ttl=args.token_ttl,
            store_bodies=not args.no_store_bodies,
            username=args.username,
            password=args.password,
        )
    except ValueError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    server = SandboxServer(config, host=args.host, port=args.port)
    try:
        server.start()
    except OSError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1
    url = server.url
    collection = f"{url}/collection/{config.inlet_id}"
    print(f"AEP sandbox: collection {collection} · IMS {url}/ims/token/v3 · page {url}/sandbox/", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
