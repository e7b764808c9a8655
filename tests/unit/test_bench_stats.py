"""Percentiles and histogram helpers used by `make bench` (bench/stats.py)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from bench.stats import (
    fraction_at_most,
    histogram_quantile,
    inter_arrival_deviations,
    percentile,
    ratio,
    subtract_buckets,
    summarize,
)

INF = math.inf


def test_percentile_interpolates_between_closest_ranks() -> None:
    """p50 of an even-sized sample lies halfway between the two middle values."""
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile([10, 20], 25) == 12.5


def test_percentile_ends_are_min_and_max() -> None:
    """p0 and p100 are the smallest and largest samples, whatever the input order."""
    values = [7.0, -1.0, 3.5, 12.0]
    assert percentile(values, 0) == -1.0
    assert percentile(values, 100) == 12.0


def test_percentile_matches_numpy_linear_method() -> None:
    """On random samples the result equals numpy's default (linear) percentile."""
    rng = random.Random(3)
    values = [rng.expovariate(10.0) for _ in range(257)]
    for q in (1, 50, 95, 99, 99.9):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_of_one_sample_is_that_sample() -> None:
    """A single sample is every percentile."""
    assert percentile([0.042], 95) == 0.042


def test_percentile_of_nothing_is_nan() -> None:
    """No samples: NaN, which the report prints as "-"."""
    assert math.isnan(percentile([], 50))


def test_percentile_rejects_q_outside_0_to_100() -> None:
    """A percentile beyond 100 is an error, not a clamped value."""
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)


def test_summarize_gives_count_percentiles_mean_and_max() -> None:
    """summarize reports n, p50, p95, p99, mean and max of the samples."""
    s = summarize([float(x) for x in range(1, 101)])
    assert s.n == 100
    assert s.p50 == pytest.approx(50.5)
    assert s.p95 == pytest.approx(95.05)
    assert s.p99 == pytest.approx(99.01)
    assert s.mean == pytest.approx(50.5)
    assert s.max == 100.0


def test_summary_to_dict_scales_and_turns_nan_into_none() -> None:
    """Seconds become milliseconds with scale=1000; an empty summary gives nulls for JSON."""
    assert summarize([0.1, 0.2, 0.3]).to_dict(scale=1000.0, digits=1)["p50"] == 200.0
    empty = summarize([]).to_dict()
    assert empty["n"] == 0
    assert empty["p95"] is None


def test_ratio_is_nan_when_a_side_is_missing_or_zero() -> None:
    """A ratio against nothing is NaN rather than an exception or infinity."""
    assert ratio(3.0, 2.0) == 1.5
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))


def test_inter_arrival_deviations_measure_distance_from_the_period() -> None:
    """Gaps of 20, 25 and 15 ms deviate 0, 5 and 5 ms from a 20 ms period."""
    arrivals = [0.000, 0.020, 0.045, 0.060]
    assert inter_arrival_deviations(arrivals, 0.020) == pytest.approx([0.0, 0.005, 0.005])
    assert inter_arrival_deviations([1.0], 0.020) == []


BUCKETS = [(0.001, 50.0), (0.005, 90.0), (0.01, 99.0), (0.02, 100.0), (INF, 100.0)]


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    """The median falls halfway into the first bucket; p95 halfway into (5 ms, 10 ms]."""
    assert histogram_quantile(BUCKETS, 0.5) == pytest.approx(0.001)
    assert histogram_quantile(BUCKETS, 0.25) == pytest.approx(0.0005)
    assert histogram_quantile(BUCKETS, 0.945) == pytest.approx(0.0075)


def test_histogram_quantile_in_the_inf_bucket_returns_the_largest_bound() -> None:
    """Observations beyond every finite bound report that bound (as PromQL does)."""
    buckets = [(0.01, 10.0), (INF, 100.0)]
    assert histogram_quantile(buckets, 0.99) == 0.01


def test_histogram_quantile_without_observations_is_nan_and_needs_inf() -> None:
    """An empty histogram has no quantile; buckets without +Inf are malformed."""
    assert math.isnan(histogram_quantile([(0.01, 0.0), (INF, 0.0)], 0.99))
    with pytest.raises(ValueError, match="Inf"):
        histogram_quantile([(0.01, 5.0)], 0.5)


def test_fraction_at_most_counts_observations_up_to_a_bucket_bound() -> None:
    """99 of 100 observations are <= 10 ms: exactly the p99 <= 10 ms criterion."""
    assert fraction_at_most(BUCKETS, 0.01) == pytest.approx(0.99)
    assert fraction_at_most(BUCKETS, 0.0005) == 0.0
    assert math.isnan(fraction_at_most([(INF, 0.0)], 0.01))


def test_subtract_buckets_gives_what_was_observed_between_two_scrapes() -> None:
    """The later scrape minus the earlier one, bucket by bucket; no earlier scrape: unchanged."""
    before = [(0.01, 10.0), (INF, 12.0)]
    after = [(0.01, 15.0), (INF, 20.0)]
    assert subtract_buckets(after, before) == [(0.01, 5.0), (INF, 8.0)]
    assert subtract_buckets(after, []) == after
