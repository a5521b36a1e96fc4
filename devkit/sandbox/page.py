"""The sandbox's HTML page: the newest events, refreshing itself."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Any

from devkit.sandbox.config import PAGE_EVENTS, SandboxConfig


def _identity(message: Any) -> str:
    """First identity of an XDM event, or the attendee email of a raw push."""
    if not isinstance(message, dict):
        return ""
    body = message.get("body")
    entity = body.get("xdmEntity") if isinstance(body, dict) else None
    if isinstance(entity, dict):
        identity_map = entity.get("identityMap")
        if isinstance(identity_map, dict):
            for namespace, entries in identity_map.items():
                if isinstance(entries, list) and entries and isinstance(entries[0], dict):
                    return f"{namespace}: {entries[0].get('id', '')}"
        return ""
    attendee = message.get("attendee")
    email = attendee.get("email") if isinstance(attendee, dict) else message.get("attendee.email")
    return str(email or "")


def _event_timestamp(message: Any) -> str:
    if not isinstance(message, dict):
        return ""
    body = message.get("body")
    entity = body.get("xdmEntity") if isinstance(body, dict) else message
    return str(entity.get("timestamp", "")) if isinstance(entity, dict) else ""


_PAGE_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d1d1f;background:#fafafa}
h1{font-size:1.3rem;margin:0 0 .8rem}
.counters{display:flex;gap:1rem;flex-wrap:wrap;margin-bottom:1rem}
.counter{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5rem .9rem}
.counter b{display:block;font-size:1.2rem}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #eee;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f0f0f0;position:sticky;top:0}
code,pre{font:12px ui-monospace,monospace}
pre{white-space:pre-wrap;max-width:70rem;margin:.3rem 0}
.warn{color:#b00020}
"""


def render_page(config: SandboxConfig, counters: dict[str, Any], events: list[dict[str, Any]]) -> str:
    """Render the HTML overview; every value from a request is escaped."""
    esc = html.escape
    boxes = "".join(
        f'<div class="counter">{esc(label)}<b>{esc(str(value))}</b></div>'
        for label, value in (
            ("events", counters["events"]),
            ("requests", counters["requests"]),
            ("tokens minted", counters["tokens_minted"]),
            ("by status", json.dumps(counters["requests_by_status"], sort_keys=True)),
        )
    )
    faults = json.dumps(counters["faults"], sort_keys=True) if counters["faults"] else "none"
    made = [(kind, names) for kind, names in counters.get("platform", {}).items() if names]
    platform = (
        "<p>Set up here (Platform APIs): "
        + "; ".join(f"{esc(kind)}: {esc(', '.join(names))}" for kind, names in made)
        + ". Events are validated against the registered schema.</p>"
        if made
        else "<p>Nothing set up through the Platform APIs: events are not checked against a schema.</p>"
    )
    rows = []
    for event in events:
        message = event.get("message")
        received = datetime.fromtimestamp(event["receivedTimeMs"] / 1000, UTC).strftime("%H:%M:%S.%f")
        short_id = (event.get("id") or "")[:12]
        oversize = ' <span class="warn">(over 10 KB)</span>' if event.get("oversize") else ""
        details = (
            f"<details><summary>message</summary><pre>{esc(json.dumps(message, indent=2))}</pre></details>"
            if message is not None
            else "<em>not stored</em>"
        )
        cells = [
            esc(received[:-3]),
            esc(str(event.get("eventType") or "")) + oversize,
            esc(_event_timestamp(message)),
            f"<code>{esc(short_id)}</code>",
            f"<code>{esc(str(event.get('transmissionId') or ''))}</code>",
            esc(_identity(message)),
            details,
        ]
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    header = "".join(
        f"<th>{name}</th>"
        for name in ("received (UTC)", "eventType", "timestamp", "_id", "transmissionId", "identity", "")
    )
    table = f"<table><tr>{header}</tr>{''.join(rows)}</table>" if rows else "<p>No events received yet.</p>"
    return (
        '<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">'
        f"<title>AEP sandbox</title><style>{_PAGE_STYLE}</style></head><body>"
        f"<h1>AEP sandbox · inlet <code>{esc(config.inlet_id)}</code></h1>"
        f'<div class="counters">{boxes}</div><p>Faults: <code>{esc(faults)}</code></p>{platform}'
        f"<p>Newest {PAGE_EVENTS} events first.</p>{table}</body></html>"
    )
