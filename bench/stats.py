"""Percentiles and the few statistics the benchmarks report; pure functions."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks
    (numpy's default), so p50 of [1, 2, 3, 4] is 2.5. Empty input gives NaN."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be in 0..100, got {q}")
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    """Distribution of one sample set (same unit as the samples)."""

    n: int
    p50: float
    p95: float
    p99: float
    mean: float
    max: float

    def to_dict(self, scale: float = 1.0, digits: int = 2) -> dict[str, float | int | None]:
        """JSON-safe: NaN becomes None; values multiplied by ``scale`` (e.g. s -> ms)."""
        return {
            "n": self.n,
            "p50": _round(self.p50 * scale, digits),
            "p95": _round(self.p95 * scale, digits),
            "p99": _round(self.p99 * scale, digits),
            "mean": _round(self.mean * scale, digits),
            "max": _round(self.max * scale, digits),
        }


def summarize(values: Sequence[float]) -> Summary:
    """p50/p95/p99/mean/max of ``values``; all NaN when empty."""
    if not values:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    return Summary(
        n=len(values),
        p50=percentile(values, 50),
        p95=percentile(values, 95),
        p99=percentile(values, 99),
        mean=sum(values) / len(values),
        max=max(values),
    )


def ratio(ours: float, theirs: float) -> float:
    """ours / theirs; NaN when either is missing or ``theirs`` is zero."""
    if math.isnan(ours) or math.isnan(theirs) or theirs == 0:
        return math.nan
    return ours / theirs


def inter_arrival_deviations(arrivals: Sequence[float], period: float) -> list[float]:
    """|gap - period| for each gap between consecutive arrival times (seconds)."""
    return [abs((b - a) - period) for a, b in itertools.pairwise(arrivals)]


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float:
    """Estimate the q-quantile (0..1) from cumulative Prometheus buckets [(le, count)],
    interpolating linearly inside the bucket (as PromQL's histogram_quantile does).

    The last bucket must be +Inf; a quantile that falls in it returns the largest finite
    bound. No observations: NaN.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in 0..1, got {q}")
    ordered = sorted(buckets)
    if not ordered or not math.isinf(ordered[-1][0]):
        raise ValueError("buckets must end with +Inf")
    total = ordered[-1][1]
    if total <= 0:
        return math.nan
    target = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in ordered:
        if count >= target:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (target - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def fraction_at_most(buckets: Sequence[tuple[float, float]], bound: float) -> float:
    """Share of observations <= ``bound`` (which should be a bucket bound to be exact:
    otherwise the next lower bound is used, which under-counts). No observations: NaN."""
    ordered = sorted(buckets)
    if not ordered:
        return math.nan
    total = ordered[-1][1]
    if total <= 0:
        return math.nan
    below = 0.0
    for le, count in ordered:
        if le <= bound:
            below = count
    return below / total


def subtract_buckets(
    after: Sequence[tuple[float, float]], before: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Cumulative buckets observed between two scrapes (``before`` may be empty)."""
    earlier = dict(before)
    return [(le, count - earlier.get(le, 0.0)) for le, count in sorted(after)]


def _round(value: float, digits: int) -> float | None:
    if math.isnan(value):
        return None
    return round(value, digits)
