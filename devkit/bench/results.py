"""The results table: one row per figure, with its goal and whether it was met."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass
class Row:
    """One line of the table."""

    section: str
    measure: str
    value: str
    target: str = ""
    met: bool | None = None


def _n(x: float, digits: int = 0) -> str:
    return "n/a" if x != x else f"{x:,.{digits}f}"  # noqa: PLR0124 - NaN is the only value unequal to itself


def rows_for(results: dict[str, Any]) -> list[Row]:
    """The table: every measurement, each target with met or not."""
    s = results["sections"]
    rows: list[Row] = []
    builders: list[tuple[str, str, Callable[[dict[str, Any], list[Row]], None]]] = [
        ("receiver", "receiver", _receiver_rows),
        ("drain", "drain", _drain_rows),
        ("e2e", "sustained", lambda e, out: _e2e_rows(e, out, "batching" in results["plan"]["sections"])),
        ("memory", "memory", _memory_rows),
        ("scrape", "scrape", _scrape_rows),
        ("dedupe", "dedupe", _dedupe_rows),
        ("ratecap", "ratecap", _rate_cap_rows),
    ]
    for key, label, build in builders:
        if key not in s:
            continue
        if "error" in s[key]:
            rows.append(Row(label, "failed", s[key]["error"][:100], met=False))
        else:
            build(s[key], rows)
    loads = " · ".join(f"{name} {v['loadavg'][0]:.1f}" for name, v in s.items() if "loadavg" in v)
    rows.append(Row("machine", "load average (1 min) at section start", loads))
    return rows


def _receiver_rows(r: dict[str, Any], rows: list[Row]) -> None:
    for name in ("baseline", "xadd", "xadd_sync", "receiver"):
        if name not in r:
            continue  # results from before the parse + XADD floor was measured
        a = r[name]
        counted = f"{r['load_generator']}, {r['connections']} conns, median of {a['rounds_counted']}"
        if a["rounds_flagged"]:
            counted += f", {a['rounds_flagged']} flagged"
        value = f"{_n(a['rps'])} · {_n(a['p50_ms'], 1)} · {_n(a['p99_ms'], 1)} ms"
        label = {"xadd": "parse + XADD", "xadd_sync": "parse + XADD on sync workers"}.get(name, name)
        rows.append(Row("receiver", f"{label}: req/s · p50 · p99 ({counted})", value))
    value = f"{_n(r['baseline']['cpu_us_per_request'])} / {_n(r['receiver']['cpu_us_per_request'])}"
    rows.append(Row("receiver", "gunicorn CPU per request, baseline / receiver (us)", value))
    if "xadd" in r:
        value = f"{r['xadd_rps_ratio']:.0%} / {r['rps_ratio_to_xadd']:.0%}"
        rows.append(Row("receiver", "parse + XADD / baseline req/s; receiver / parse + XADD", value))
    if "p99_ratio_to_xadd" in r:
        rps_x, p99_x = r["rps_ratio_to_xadd"], r["p99_ratio_to_xadd"]
        rows.append(Row("receiver", "receiver / parse + XADD req/s", f"{rps_x:.0%}", ">= 95%", rps_x >= 0.95))
        rows.append(Row("receiver", "receiver / parse + XADD p99", f"{p99_x:.2f}x", "<= 1.2x", p99_x <= 1.2))
    rps, p99 = r["rps_ratio"], r["p99_ratio"]
    rows.append(Row("receiver", "receiver / baseline req/s", f"{rps:.0%}", ">= 85%", rps >= 0.85))
    rows.append(Row("receiver", "receiver / baseline p99", f"{p99:.2f}x", "<= 1.5x", p99 <= 1.5))
    bad = r["receiver"]["non2xx"] + r["receiver"]["socket_errors"]
    rows.append(Row("receiver", "receiver non-2xx + socket errors", f"{bad}", "0", bad == 0))


def _drain_rows(d: dict[str, Any], rows: list[Row]) -> None:
    de, na = d["design"], d["naive"]
    ok = de["completed"] and de["events_per_s"] >= 5000
    value = f"{_n(de['events_per_s'])} ev/s ({de['events']:,} in {de['seconds']:.1f} s;"
    value += f" {_n(de['steady_events_per_s'])}/s after the first)"
    rows.append(
        Row(
            "drain",
            "streams, default mapping file: 1 worker, 2 processes, better of two",
            value,
            ">= 5,000 ev/s",
            ok,
        )
    )
    if "table" in d:
        ta = d["table"]
        value = f"{_n(ta['events_per_s'])} ev/s ({ta['events']:,} in {ta['seconds']:.1f} s)"
        rows.append(Row("drain", "streams, hand-written table (same run, better of two)", value))
        ratio = d["mapping_ratio"]
        rows.append(
            Row(
                "drain",
                "default mapping file / hand-written table",
                f"{ratio:.2f}x",
                ">= 0.95x",
                ratio >= 0.95,
            )
        )
    value = f"{_n(na['events_per_s'])} ev/s ({na['events']:,} in {na['seconds']:.1f} s;"
    value += f" {_n(na['steady_events_per_s'])}/s after the first)"
    rows.append(Row("drain", "one Celery task per push", value))
    value = f"{na['publish']['apply_async_us']:.0f} us per apply_async"
    value += f", {na['redis_bytes_per_queued_task']:,.0f} B"
    rows.append(Row("drain", "one task per push: publish cost, Redis per queued task", value))
    rows.append(Row("drain", "gain over one task per push", f"{d['gain']:.1f}x", ">= 4x", d["gain"] >= 4))
    p = d["prepare_us"]
    value = (
        f"{p['prepare_total']:.0f} (loads {p['json_loads']:.0f}, validate {p['validate']:.0f},"
        f" xdm {p['to_xdm']:.0f}, encode {p['encode_and_check']:.0f})"
    )
    rows.append(Row("drain", "ingest CPU per push in one process (us)", value))
    cores = de["cpu"]["cpu_s"]
    used = {name: sec / de["seconds"] for name, sec in cores.items()}
    value = ", ".join(f"{name} {c:.2f}" for name, c in used.items() if c >= 0.02)
    rows.append(Row("drain", "streams: CPU cores used, by process", value))
    value = f"{de['redis']['calls_per_event']:.2f} / {na['redis']['calls_per_event']:.2f}"
    rows.append(Row("drain", "Redis calls per event (streams / per push)", value))


def _e2e_rows(e: dict[str, Any], rows: list[Row], batching: bool) -> None:
    u, rate = e["sustained"], e["offered_rate"]
    value = f"{rate:,} · {_n(u['acked_per_s'])} · {_n(u['delivered_per_s'])}"
    ok = u["delivered_per_s"] >= 0.98 * rate and u["non2xx"] == 0
    rows.append(
        Row("sustained", f"offered · acked · delivered /s ({e['seconds']:.0f} s)", value, "= offered", ok)
    )
    # "Does not grow": at most two seconds of traffic waiting at the end, and no upward trend.
    steady = u["backlog_end"] <= 2 * rate and u["backlog_slope_per_s"] <= 0.02 * rate
    value = (
        f"{u['backlog_start']:,} -> {u['backlog_end']:,} (max {u['backlog_max']:,}),"
        f" {u['backlog_slope_per_s']:+.1f}/s"
    )
    rows.append(Row("sustained", "backlog start -> end, trend", value, "does not grow", steady))
    lat = u["latency"]
    value = f"{lat['p50_s']:.2f} · {lat['p99_s']:.2f} s ({lat['undelivered']} undelivered)"
    rows.append(Row("sustained", "delivery latency p50 · p99 (202 -> AEP)", value))
    value = (
        f"{u['receiver_p50_ms']:.1f} · {u['receiver_p99_ms']:.1f} ms ({u['sends_late_over_100ms']} sent late)"
    )
    rows.append(Row("sustained", "receiver p50 · p99 under load", value))
    if batching:
        per = u["requests_per_1000_events"]
        rows.append(Row("batching", "AEP requests per 1,000 events (load)", f"{per:.2f}", "<= 6", per <= 6))
    if t := e.get("trickle"):
        limit = (t["batch_max_wait_ms"] + 500) / 1000
        tl = t["latency"]
        ok = tl["p99_s"] <= limit and tl["undelivered"] == 0
        value = f"{tl['p50_s']:.2f} · {tl['p99_s']:.2f} s"
        rows.append(Row("batching", "trickle (1/s) latency p50 · p99", value, f"p99 <= {limit:.2f} s", ok))


def _scrape_rows(m: dict[str, Any], rows: list[Row]) -> None:
    value = f"{m['empty_ms']:.2f} ms / {m['full_ms']:.2f} ms"
    ok = m["full_ms"] <= 2 * m["empty_ms"] + 1
    rows.append(Row("scrape", f"/metrics, 0 / {m['letters']:,} dead letters", value, "about equal", ok))


def _dedupe_rows(d: dict[str, Any], rows: list[Row]) -> None:
    value = f"{d['bytes_per_id']:.1f} B (a key per id: {d['bytes_per_id_key_each']:.1f} B)"
    rows.append(
        Row(
            "dedupe",
            f"Redis per remembered id at {d['ids']:,} ids",
            value,
            "<= 60 B",
            d["bytes_per_id"] <= 60,
        )
    )


def _rate_cap_rows(r: dict[str, Any], rows: list[Row]) -> None:
    cap = r["cap"]
    ok = r["busiest_second"] <= cap * 1.1
    value = f"busiest second {r['busiest_second']}, {r['events']:,} in {r['seconds']:.1f} s"
    value += f" (the cap allows {r['implied_seconds']:.0f} s)"
    rows.append(
        Row("ratecap", f"2 workers, cap {cap}/s, {r['events']:,} queued", value, f"<= {cap * 1.1:.0f}/s", ok)
    )


def _memory_rows(m: dict[str, Any], rows: list[Row]) -> None:
    per, size = m["redis_bytes_per_push_used_memory"], m["push_json_bytes"]
    value = f"{per:.0f} B vs {size:.0f} B ({m['ratio']:.2f}x)"
    rows.append(Row("memory", "Redis per queued push vs its JSON", value, "<= 1.5x", m["ratio"] <= 1.5))
    value = (
        f"{m['rss_start_total'] / 2**20:.0f} -> {m['rss_end_total'] / 2**20:.0f} MB"
        f" ({m['rss_growth']:+.1%}; {m['rss_growth_after_warmup']:+.1%} after warm-up)"
    )
    ok = m["rss_growth"] < 0.10 and not m.get("timed_out")
    rows.append(Row("memory", f"worker RSS, start -> after {m['drained']:,} events", value, "< 10%", ok))
    value = f"{m['dedupe_bytes_per_event']:.0f} B"
    rows.append(Row("memory", "Redis per delivered event (dedupe key, 7 days)", value))


def print_table(rows: list[Row], header: str) -> None:
    """The one table, plain text."""
    cols = ("section", "measure", "value", "target", "")
    cells = [
        (r.section, r.measure, r.value, r.target, "" if r.met is None else ("met" if r.met else "NOT MET"))
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [cols, *cells]) for i in range(len(cols))]
    print()
    print(header)
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    print(line.rstrip())
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)).rstrip())


def print_profiles(results: dict[str, Any]) -> None:
    """The hot spots of every profiled process, after the table."""
    found = []
    for section in results["sections"].values():
        if not isinstance(section, dict):
            continue
        for part in (section, section.get("design"), section.get("naive")):
            if isinstance(part, dict) and part.get("profile"):
                found.extend(part["profile"].items())
    for role, prof in found:
        active = f"{prof['active_cores']:.2f} cores running or runnable"
        print(f"\nprofile {role}: {prof['samples']} samples, {active}")
        print("  by owner (self): " + ", ".join(f"{n} {p}%" for n, p in prof["by_owner"][:8]))
        print("  top functions (self):")
        for name, p in prof["top_self"][:8]:
            print(f"    {p:5.1f}%  {name}")
        if prof["project_inclusive"]:
            print("  project functions (inclusive):")
            for name, p in prof["project_inclusive"][:8]:
                print(f"    {p:5.1f}%  {name}")
