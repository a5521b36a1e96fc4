"""The results chart (bench/results.png)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from devkit.bench.environment import rates


def draw_chart(results: dict[str, Any], path: Path) -> None:
    """Latency distributions and throughput over time, one PNG."""
    import matplotlib  # noqa: PLC0415 - optional dependency (the bench extra), loaded only here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    s = results["sections"]
    fig, axes = plt.subplots(3, 2, figsize=(14, 13))
    fig.suptitle(f"rainbridge benchmark {results['meta']['started']} ({results['meta']['mode']})")
    (ax_recv, ax_lat), (ax_drain, ax_sus), (ax_mem, ax_batch) = axes
    panels: list[tuple[str, Any, Callable[[Any, dict[str, Any]], None], str]] = [
        ("receiver", ax_recv, _plot_receiver, "receiver vs baseline"),
        ("e2e", ax_lat, _plot_latency, "delivery latency"),
        ("drain", ax_drain, _plot_drain, "drain"),
        ("e2e", ax_sus, _plot_sustained, "sustained"),
        ("memory", ax_mem, _plot_memory, "memory"),
        ("e2e", ax_batch, _plot_batches, "batching"),
    ]
    for key, ax, plot, title in panels:
        if key in s and "error" not in s[key]:
            plot(ax, s[key])
        else:
            ax.set_title(title)
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_receiver(ax: Any, r: dict[str, Any]) -> None:
    names: list[str] = []
    for name, color in (("baseline", "tab:gray"), ("xadd", "tab:orange"), ("receiver", "tab:blue")):
        for rnd in (x for x in r["rounds"] if x["app"] == name and not x["flagged"]):
            qs = list(rnd["percentiles_ms"].items())
            names = [f"p{q}" for q, _ in qs]
            label = f"{name} round {rnd['round']} ({rnd['rps']:,.0f} req/s)"
            ax.plot(range(len(qs)), [v for _, v in qs], marker="o", color=color, alpha=0.7, label=label)
    ax.set_xticks(range(len(names)), names)
    ax.set(title="receiver vs baseline: response latency percentiles", ylabel="ms")
    ax.legend(fontsize=7)


def _plot_latency(ax: Any, e: dict[str, Any]) -> None:
    for name, lat in (
        ("sustained", e["sustained"]["latency"]),
        ("trickle 1/s", e.get("trickle", {}).get("latency")),
    ):
        if lat and lat["cdf"]:
            share = [q / 100 for q in range(len(lat["cdf"]))]
            label = f"{name}: p50 {lat['p50_s']:.2f} s, p99 {lat['p99_s']:.2f} s"
            ax.step(lat["cdf"], share, where="post", label=label)
    if "trickle" in e:
        limit = (e["trickle"]["batch_max_wait_ms"] + 500) / 1000
        ax.axvline(limit, color="red", ls="--", label="trickle p99 target")
    ax.set(title="delivery latency (202 -> accepted by AEP), CDF", xlabel="seconds", ylabel="share")
    ax.legend(fontsize=8)


def _every(samples: list[tuple[float, int]], seconds: float) -> list[tuple[float, int]]:
    """The samples at least ``seconds`` apart (and the last), so rates between them are not all noise."""
    kept: list[tuple[float, int]] = []
    for sample in samples:
        if not kept or sample[0] - kept[-1][0] >= seconds:
            kept.append(sample)
    if samples and kept[-1] != samples[-1]:
        kept.append(samples[-1])
    return kept


def _plot_drain(ax: Any, d: dict[str, Any]) -> None:
    for name, part in (("streams", d["design"]), ("one task per push", d["naive"])):
        pts = rates(_every([(float(t), int(c)) for t, c in part["samples"]], 1.0))
        if pts:
            ax.plot(*zip(*pts, strict=True), label=f"{name}: {part['events_per_s']:,.0f} ev/s")
    title = f"drain of {d['n']:,} queued pushes: throughput over time"
    ax.set(title=title, xlabel="seconds", ylabel="events/s")
    ax.legend(fontsize=8)


def _plot_sustained(ax: Any, e: dict[str, Any]) -> None:
    sus = e["sustained"]
    for key, label in (("acked_per_second", "acknowledged/s"), ("delivered_per_second", "delivered/s")):
        if sus[key]:
            ax.plot(*zip(*sus[key], strict=True), label=label)
    ax.axhline(e["offered_rate"], color="gray", ls=":", label="offered")
    twin = ax.twinx()
    backlog = [x["inbox"] + x["outbox"] for x in sus["series"]]
    twin.plot(
        [x["t"] for x in sus["series"]], backlog, color="tab:red", alpha=0.6, label="backlog (inbox+outbox)"
    )
    twin.set_ylabel("backlog")
    ax.set(title="sustained: throughput over time", xlabel="seconds", ylabel="events/s")
    ax.legend(loc="lower left", fontsize=8)
    twin.legend(loc="lower right", fontsize=8)


def _plot_memory(ax: Any, m: dict[str, Any]) -> None:
    ax.plot([x["processed"] for x in m["series"]], [x["rss"] / 2**20 for x in m["series"]])
    ax.set(title="worker RSS (main + pool) over a long drain", xlabel="events drained", ylabel="MB")
    ax.set_ylim(bottom=0)


def _plot_batches(ax: Any, e: dict[str, Any]) -> None:
    sus = e["sustained"]
    if sus["batch_size_histogram"]:
        xs, cs = zip(*sus["batch_size_histogram"], strict=True)
        ax.bar(xs, cs, width=3)
    per = sus["requests_per_1000_events"]
    ax.set(
        title=f"messages per AEP request under load ({per:.2f} per 1,000 events)",
        xlabel="messages",
        ylabel="requests",
    )
