"""Helpers for running real dependencies locally (tests, demo, benchmarks)."""
