"""What the console's pages show, from registry records: worker rows (health by heartbeat
age, drained, CPU only or GPUs), GPU cards with bounded sparkline history, session rows."""

from __future__ import annotations

import pytest
from duplex.console.history import GpuHistory
from duplex.console.views import (
    gpu_rows,
    gpu_summary,
    record_gpu_history,
    session_rows,
    sparkline_points,
    worker_rows,
)
from duplex.registry.orchestrators import OrchestratorRecord, SessionSummary
from duplex.registry.records import Capabilities, GpuSample, WorkerMetrics, WorkerRecord

NOW = 1_700_000_000.0
GIB = 1024**3


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(
    name: str, *, age_s: float = 0.1, gpus: tuple[GpuSample, ...] | None = None
) -> WorkerRecord:
    return WorkerRecord(
        name=name,
        addr=f"grpc://127.0.0.1:{5000 + len(name)}",
        adapter_type="piper",
        capabilities=Capabilities(languages=("en",), extra=("ssml",)),
        resident_models=("piper-en-joe-medium",),
        available_models=("piper-en-joe-medium", "tone-fast"),
        metrics=WorkerMetrics(queue_depth=3, active_sessions=2, rtf=0.031, underruns=1),
        last_heartbeat=NOW - age_s,
        gpus=gpus,
    )


def gpu(gpu_id: str, util: float | None, *, power: float | None = 70.0) -> GpuSample:
    return GpuSample(
        gpu_id=gpu_id,
        name="NVIDIA L4",
        util_pct=util,
        mem_used=6 * GIB,
        mem_total=24 * GIB,
        temp_c=55.0,
        power_w=power,
        sampled_at=NOW - 0.5,
    )


def test_worker_rows_carry_every_field_sorted_by_name() -> None:
    workers = {"b": record("b"), "a": record("a", age_s=0.4)}
    rows = worker_rows(workers, frozenset({"b"}), worker_ttl_ms=1000, now=NOW)
    assert [r.name for r in rows] == ["a", "b"]
    a, b = rows
    assert (a.adapter, a.queue_depth, a.active_sessions, a.rtf) == ("piper", 3, 2, 0.031)
    assert a.resident_models == ("piper-en-joe-medium",)
    assert a.heartbeat_age_s == pytest.approx(0.4) and a.gpu == "CPU only"
    assert (a.drained, b.drained) == (False, True)
    assert a.capabilities == ("ssml", "streaming")


def test_health_is_late_past_half_the_worker_ttl() -> None:
    workers = {"fresh": record("fresh", age_s=4.9), "late": record("late", age_s=7.6)}
    rows = {r.name: r.health for r in worker_rows(workers, frozenset(), 15000, NOW)}
    assert rows == {"fresh": "ok", "late": "late"}


def test_gpu_summary_names_each_gpu_or_says_cpu_only() -> None:
    assert gpu_summary(record("cpu")) == "CPU only"
    assert gpu_summary(record("cpu", gpus=())) == "CPU only"
    two = record("g", gpus=(gpu("0", 37.4), gpu("1", None)))
    assert gpu_summary(two) == "NVIDIA L4 37%, NVIDIA L4"


def test_gpu_rows_show_the_sample_and_a_missing_figure_stays_missing() -> None:
    workers = {"g": record("g", gpus=(gpu("0", 50.0), gpu("1", 10.0, power=None)))}
    history = GpuHistory(min_interval_s=0)
    record_gpu_history(workers, history)
    rows = gpu_rows(workers, history, now=NOW)
    assert [r.key for r in rows] == ["g/0", "g/1"]
    first, second = rows
    assert first.utilization == 50.0 and first.temperature_c == 55.0
    assert first.memory_text == "6.0 / 24.0 GiB (25%)" and first.memory_percent == 25.0
    assert second.power_w is None  # not a made-up zero
    assert first.sample_age_s == pytest.approx(0.5)
    assert first.sparkline  # one sample is already a (flat) line


def test_cpu_only_workers_have_no_gpu_rows() -> None:
    assert gpu_rows({"a": record("a"), "b": record("b")}, GpuHistory(), now=NOW) == []


def test_the_history_is_bounded_paced_and_forgets_gone_gpus() -> None:
    clock = Clock()
    history = GpuHistory(points=4, min_interval_s=1.0, forget_after_s=10.0, clock=clock)
    for value in range(10):
        history.record("w/0", float(value))
        clock.now += 0.5  # two refreshes a second: one sample kept a second
    assert history.series("w/0") == (2.0, 4.0, 6.0, 8.0)
    clock.now += 11
    history.record("w/1", 1.0)
    assert history.series("w/0") == ()
    assert history.series("w/1") == (1.0,)


def test_sparkline_points_span_the_box_with_100_percent_at_the_top() -> None:
    points = sparkline_points([0.0, 50.0, 100.0, 150.0], width=120, height=28)
    coords = [tuple(map(float, p.split(","))) for p in points.split()]
    assert [x for x, _ in coords] == [0.0, 40.0, 80.0, 120.0]
    assert coords[0][1] == 27.0 and coords[2][1] == 1.0 and coords[3][1] == 1.0
    assert sparkline_points([]) == ""


def test_session_rows_per_orchestrator_with_short_ids() -> None:
    sessions = (
        SessionSummary(
            "abcdef0123456789", "webrtc", "w1", "piper-en", "speaking", NOW - 12, 180.0, 2
        ),
        SessionSummary("0123456789abcdef", "websocket", "w2", "tone-fast", "idle", NOW - 3),
    )
    orchestrators, rows = session_rows(
        [
            OrchestratorRecord(
                "orch-b", "http://b:8080", NOW - 60, NOW - 0.5, {"w1": 1}, sessions, 5
            ),
            OrchestratorRecord("orch-a", "http://a:8080", NOW - 60, NOW - 0.2),
        ],
        now=NOW,
    )
    assert [o.id for o in orchestrators] == ["orch-a", "orch-b"]
    assert (orchestrators[1].sessions_total, orchestrators[1].sessions_shown) == (5, 2)
    assert [r.session for r in rows] == ["abcdef01", "01234567"]  # oldest first
    first = rows[0]
    assert (first.transport, first.worker, first.model_id) == ("webrtc", "w1", "piper-en")
    assert first.age_s == pytest.approx(12.0)
    assert (first.first_audio_ms, first.barge_ins) == (180.0, 2)
    assert rows[1].first_audio_ms is None
