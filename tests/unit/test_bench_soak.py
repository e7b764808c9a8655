"""The soak's memory growth figures compare like with like across a sawtooth."""

from __future__ import annotations

from bench.soak import growth_figures

MIB = 2**20


def _sawtooth(duration: int, low: float, creep_per_s: float) -> list[tuple[float, int]]:
    """RSS that climbs 40 MiB over 50 s and drops back, its troughs rising by creep_per_s."""
    return [
        (float(t), int((low + creep_per_s * t + 40 * (t % 50) / 50) * MIB))
        for t in range(1, duration + 1)
    ]


def test_a_flat_sawtooth_has_no_growth_though_its_raw_figure_has() -> None:
    figures = growth_figures(_sawtooth(299, 140, 0.0), 299.0)
    assert abs(figures["low"]) < 0.01
    assert abs(figures["growth"]) < 0.05
    assert figures["raw"] > 0.05  # the last sample lies near a peak


def test_troughs_that_creep_count_as_growth() -> None:
    figures = growth_figures(_sawtooth(300, 140, 0.1), 300.0)  # +24 MiB over 240 s
    assert figures["low"] > 0.1
    assert figures["growth"] >= figures["low"]


def test_too_few_samples_give_no_figure() -> None:
    assert growth_figures([(1.0, 100 * MIB)], 300.0)["growth"] is None
