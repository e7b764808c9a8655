"""The report's PNG plots, drawn from results.json's dict (not from live objects), so that a
section's data can change shape without breaking the report: a plot whose data is missing is
left out and named, never fatal. matplotlib's object API only (no pyplot, no global state)."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bench.report import Plot

DPI = 110
LATENESS_BOUND_MS = 10.0
# Barge-in parts as bargein_latency.py names them in its summary (unknown keys keep their key).
BARGEIN_PARTS: dict[str, str] = {
    "server_detect_ms": "(a) onset -> VAD decision, server",
    "client_detect_ms": "(a) first speech sent -> BargeIn, client",
    "server_cut_ms": "(b) VAD decision -> last frame sent",
    "reported_latency_ms": "BargeIn.latency_ms (a + b)",
    "client_last_audio_ms": "(c) first speech sent -> last voiced received",
    "audio_after_bargein_ms": "voiced audio after BargeIn",
}
Drawer = Callable[[dict[str, Any]], Figure | None]


def write_plots(folder: Path, payload: dict[str, Any]) -> tuple[list[Plot], list[str]]:
    """Every plot that has data, as PNG files in ``folder``; and what was left out, why."""
    plots: list[Plot] = []
    problems: list[str] = []
    for file, title, draw in PLOTS:
        try:
            figure = draw(payload)
            if figure is None:
                problems.append(f"{title}: no data in this run")
                continue
            figure.suptitle(title)
            figure.savefig(folder / file, dpi=DPI, format="png")
            plots.append(Plot(title, file))
        except Exception as exc:  # a plot must never lose the report
            problems.append(f"{title}: not drawn ({type(exc).__name__}: {exc})")
    return plots, problems


def section_data(payload: dict[str, Any], name: str) -> dict[str, Any]:
    """A section's data dict ({} when the section did not run or has none)."""
    for section in payload.get("sections", []):
        if isinstance(section, dict) and section.get("name") == name:
            data = section.get("data")
            return data if isinstance(data, dict) else {}
    return {}


def is_pass(value: object) -> bool:
    return isinstance(value, dict) and "concurrency" in value and "first_audio_ms" in value


def pass_sets(payload: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """{system: [pass dicts]}: the peers section's systems, else the latency sections' passes."""
    systems = section_data(payload, "peers").get("systems")
    if isinstance(systems, dict) and systems:
        return {k: [p for p in v if is_pass(p)] for k, v in systems.items() if isinstance(v, list)}
    found: dict[str, list[dict[str, Any]]] = {}
    for name in ("worker_latency", "orchestrator_latency"):
        for key, value in section_data(payload, name).items():
            if isinstance(value, list) and value and all(is_pass(p) for p in value):
                found[f"{name}: {key}"] = value
    return found


def short(label: str, width: int = 18) -> str:
    return "\n".join(textwrap.wrap(label, width)) or label


def number(value: object) -> float:
    """A figure from JSON (None and strings are NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def first_audio(payload: dict[str, Any]) -> Figure | None:
    """Box plots of first-audio times, one panel per concurrency, one box per system."""
    sets = pass_sets(payload)
    levels = sorted({int(p["concurrency"]) for passes in sets.values() for p in passes})
    panels: list[tuple[int, list[str], list[list[float]]]] = []
    for c in levels:
        labels, samples = [], []
        for system, passes in sets.items():
            for p in passes:
                values = [number(x) for x in p.get("first_audio_samples_ms") or []]
                values = [v for v in values if v > 0]
                if int(p["concurrency"]) == c and values:
                    labels.append(short(system))
                    samples.append(values)
        if samples:
            panels.append((c, labels, samples))
    if not panels:
        return None
    widest = max(len(labels) for _, labels, _ in panels)
    fig = Figure(figsize=(max(6.0, 1.3 * widest) * len(panels) / 1.6, 5.5), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (c, labels, samples) in zip(axes, panels, strict=True):
        ax.boxplot(samples, whis=(5, 95), showfliers=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=60, fontsize=7, ha="right")
        ax.set_title("sequential" if c == 1 else f"{c} clients")
        ax.set_yscale("log")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("first audio, ms (box: p25-p75, whiskers: p5-p95)")
    return fig


def throughput(payload: dict[str, Any]) -> Figure | None:
    """Audio-seconds per wall-second and CPU-seconds per audio-second against concurrency."""
    sets = pass_sets(payload)
    if not any(sets.values()):
        return None
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    for system, passes in sets.items():
        ordered = sorted(passes, key=lambda p: int(p["concurrency"]))
        xs = [int(p["concurrency"]) for p in ordered]
        left.plot(xs, [number(p.get("audio_s_per_s")) for p in ordered], marker="o", label=system)
        cpa = [number(p.get("cpu_s")) / number(p.get("audio_s")) for p in ordered]
        right.plot(xs, cpa, marker="o", label=system)
    left.set(xlabel="concurrent clients", ylabel="audio-s per wall-s", title="throughput")
    right.set(xlabel="concurrent clients", ylabel="CPU-s per audio-s", title="CPU cost")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
    left.legend(fontsize=7)
    return fig


def bargein(payload: dict[str, Any]) -> Figure | None:
    """Each barge-in part's p50 (bar) and p95 (tick), per transport."""
    summary = section_data(payload, "bargein_latency").get("summary_ms")
    if not isinstance(summary, dict) or not summary:
        return None
    transports = [t for t, parts in summary.items() if isinstance(parts, dict)]
    keys = list(dict.fromkeys(k for t in transports for k in summary[t]))
    if not keys:
        return None
    fig = Figure(figsize=(10, 1.0 + 0.55 * len(keys) * len(transports)), layout="constrained")
    ax = fig.subplots()
    height = 0.8 / max(len(transports), 1)
    for i, transport in enumerate(transports):
        ys = [k + i * height for k in range(len(keys))]
        parts = summary[transport]
        p50 = [number((parts.get(k) or {}).get("p50")) for k in keys]
        p95 = [number((parts.get(k) or {}).get("p95")) for k in keys]
        ax.barh(ys, p50, height=height, label=f"{transport} p50")
        ax.scatter(p95, ys, marker="|", s=200, color="black", zorder=3)
    ax.scatter([], [], marker="|", color="black", label="p95")
    ax.set_yticks(
        [k + height * (len(transports) - 1) / 2 for k in range(len(keys))],
        [BARGEIN_PARTS.get(k, k) for k in keys],
        fontsize=8,
    )
    ax.invert_yaxis()
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("ms")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def routing(payload: dict[str, Any]) -> Figure | None:
    """Decision time (p50, p95 dashed) against the number of registered workers, per path."""
    data = section_data(payload, "routing_scale")
    points = data.get("by_fleet_size")
    if not isinstance(points, list) or not points:
        if "workers" not in data or not isinstance(data.get("decision_us"), dict):
            return None
        points = [{"workers": data["workers"], "decision_us": data["decision_us"]}]
    series: dict[str, list[tuple[float, float, float]]] = {}
    for point in points:
        n = number(point.get("workers"))
        for path, s in (point.get("decision_us") or {}).items():
            if isinstance(s, dict):
                series.setdefault(path, []).append((n, number(s.get("p50")), number(s.get("p95"))))
    if not series:
        return None
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    for path, rows in series.items():
        rows.sort()
        (line,) = ax.plot([r[0] for r in rows], [r[1] for r in rows], marker="o", label=path)
        ax.plot([r[0] for r in rows], [r[2] for r in rows], linestyle="--", color=line.get_color())
    ax.set(xscale="log", yscale="log", xlabel="registered workers", ylabel="decision time, us")
    ax.set_title("p50 (solid), p95 (dashed)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def step_lists(value: object, path: str = "") -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Every list of capacity steps (dicts with `sessions` and a lateness figure) in ``value``,
    with where it was found; whatever shape the section gives its data."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from step_lists(inner, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        rows = [r for r in value if isinstance(r, dict) and "sessions" in r and lateness_key(r)]
        if rows:
            yield path or "steps", rows
        else:
            for i, inner in enumerate(value):
                yield from step_lists(inner, f"{path}[{i}]")


def lateness_key(row: dict[str, Any]) -> str | None:
    keys = [k for k in row if "lateness" in k and k.endswith("_ms")]
    preferred = [k for k in keys if "p99" in k]
    chosen = preferred or keys
    return chosen[0] if chosen else None


def series_label(section: str, path: str) -> str:
    """`orchestrator.steps` -> `tone_capacity: orchestrator`; a bare `steps` -> the section."""
    where = path.removesuffix("steps").rstrip(".")
    return f"{section}: {where}" if where else section


def capacity_series(payload: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    series: dict[str, list[dict[str, Any]]] = {}
    for path, rows in step_lists(section_data(payload, "tone_capacity")):
        series[series_label("tone_capacity", path)] = rows
    for path, rows in step_lists(section_data(payload, "webrtc_capacity")):
        for mic in sorted({bool(r.get("mic")) for r in rows}, reverse=True):
            label = series_label("WebRTC, mic + TTS" if mic else "WebRTC, TTS only", path)
            series[label] = [r for r in rows if bool(r.get("mic")) == mic]
    return series


def capacity(payload: dict[str, Any]) -> Figure | None:
    """p99 send lateness (and the orchestrator's CPU) against sessions; hollow = missed."""
    series = capacity_series(payload)
    if not series:
        return None
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    for label, rows in series.items():
        rows = sorted(rows, key=lambda r: number(r["sessions"]))
        key = lateness_key(rows[0]) or ""
        xs = [number(r["sessions"]) for r in rows]
        (line,) = left.plot(xs, [number(r.get(key)) for r in rows], label=label)
        for r in rows:
            held = r.get("held", True) is not False
            left.scatter(
                number(r["sessions"]),
                number(r.get(key)),
                color=line.get_color(),
                facecolors=line.get_color() if held else "none",
                zorder=3,
            )
        cpu = [number(r.get("orchestrator_cpu_percent")) for r in rows]
        if any(not math.isnan(c) for c in cpu):
            right.plot(xs, cpu, marker="o", color=line.get_color(), label=label)
    left.axhline(LATENESS_BOUND_MS, color="red", linestyle=":", label="10 ms bound")
    left.set(xlabel="sessions", ylabel="p99 send lateness, ms", title="lateness (hollow: missed)")
    right.set(xlabel="sessions", ylabel="orchestrator CPU, % of a core", title="CPU")
    _finish(left, right)
    return fig


def _finish(*axes: Axes) -> None:
    for ax in axes:
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)


PLOTS: tuple[tuple[str, str, Drawer], ...] = (
    ("first_audio.png", "First audio per system and concurrency", first_audio),
    ("throughput.png", "Throughput and CPU cost versus concurrency", throughput),
    ("bargein.png", "Barge-in latency, part by part", bargein),
    ("routing.png", "Routing decision time versus fleet size", routing),
    ("capacity.png", "Orchestrator capacity versus send lateness", capacity),
)
