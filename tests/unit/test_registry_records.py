"""The exact Redis encodings of worker records and routing settings."""

from __future__ import annotations

import dataclasses
import json

import pytest
from duplex.registry.records import (
    Capabilities,
    GpuSample,
    PriorityRule,
    RegistryDecodeError,
    RoutingSettings,
    Strategy,
    WorkerMetrics,
    WorkerRecord,
)

RECORD = WorkerRecord(
    name="gpu0",
    addr="grpc://10.0.0.5:7001",
    adapter_type="piper",
    capabilities=Capabilities(streaming=True, languages=("en",), extra=("ssml",)),
    resident_models=("piper-en-joe",),
    available_models=("piper-en-joe", "tone"),
    metrics=WorkerMetrics(queue_depth=2, active_sessions=1, rtf=0.031, underruns=0),
    last_heartbeat=1_700_000_000.123456,
    device="cuda:0",
)


def test_worker_record_round_trips_through_its_hash() -> None:
    """decode(encode(r)) == r, including the float heartbeat to the microsecond."""
    assert WorkerRecord.decode(RECORD.encode()) == RECORD


def test_worker_hash_has_the_guides_fields_as_json() -> None:
    """The guide's fields are present; capabilities, resident_models, metrics are JSON."""
    fields = RECORD.encode()
    assert fields["name"] == "gpu0" and fields["addr"] == "grpc://10.0.0.5:7001"
    assert fields["adapter_type"] == "piper"
    assert json.loads(fields["capabilities"])["languages"] == ["en"]
    assert json.loads(fields["capabilities"])["streaming"] is True
    assert json.loads(fields["resident_models"]) == ["piper-en-joe"]
    assert json.loads(fields["metrics"]) == {
        "queue_depth": 2,
        "active_sessions": 1,
        "rtf": 0.031,
        "underruns": 0,
    }
    assert float(fields["last_heartbeat"]) == RECORD.last_heartbeat


GPU = GpuSample(
    gpu_id="1",
    name="NVIDIA H100 80GB HBM3",
    util_pct=37.0,
    mem_used=21_474_836_480,
    mem_total=85_899_345_920,
    temp_c=51.0,
    power_w=123.4,
    sampled_at=1_700_000_000.25,
)


def test_a_record_with_gpus_and_a_metrics_port_round_trips() -> None:
    """The GPU readings (one value unknown: null) and the metrics port survive the hash."""
    unknown_power = GpuSample("0", "NVIDIA L4", 5.0, 1, 2, 40.0, None, 1_700_000_000.0)
    record = dataclasses.replace(RECORD, gpus=(GPU, unknown_power), metrics_port=9101)
    assert WorkerRecord.decode(record.encode()) == record


def test_the_gpu_field_is_compact_json_in_the_documented_shape() -> None:
    """`gpu` is a JSON list of {gpu_id, name, util_pct, mem_used, mem_total, temp_c, power_w,
    sampled_at} without spaces; `metrics_port` is the port as text."""
    fields = dataclasses.replace(RECORD, gpus=(GPU,), metrics_port=9102).encode()
    assert fields["gpu"] == (
        '[{"gpu_id":"1","name":"NVIDIA H100 80GB HBM3","util_pct":37.0,'
        '"mem_used":21474836480,"mem_total":85899345920,"temp_c":51.0,"power_w":123.4,'
        '"sampled_at":1700000000.25}]'
    )
    assert fields["metrics_port"] == "9102"


def test_no_gpu_and_no_metrics_are_written_as_none() -> None:
    """A worker without GPU says `gpu: none`; without /metrics, `metrics_port: none` (both
    always written, so a restarted worker overwrites what its predecessor left)."""
    fields = RECORD.encode()
    assert fields["gpu"] == "none" and fields["metrics_port"] == "none"
    decoded = WorkerRecord.decode(fields)
    assert decoded.gpus is None and decoded.metrics_port is None


def test_a_record_written_before_the_gpu_and_metrics_fields_decodes_as_none() -> None:
    """An older worker's hash has neither field: its GPUs are unknown, shown as none."""
    fields = RECORD.encode()
    del fields["gpu"], fields["metrics_port"]
    decoded = WorkerRecord.decode(fields)
    assert decoded.gpus is None and decoded.metrics_port is None


def test_target_drops_the_grpc_scheme() -> None:
    """grpc.aio channels take host:port."""
    assert RECORD.target == "10.0.0.5:7001"


def test_capability_names_include_flags_and_extras() -> None:
    """names() lists streaming/zero_shot when on, plus extra names."""
    assert RECORD.capabilities.names() == frozenset({"streaming", "ssml"})


def test_a_guide_style_hash_without_our_extra_fields_decodes() -> None:
    """A hash written as the guide shows (no available_models, no device) still decodes."""
    fields = RECORD.encode()
    del fields["available_models"], fields["device"]
    record = WorkerRecord.decode(fields)
    assert record.available_models == () and record.device == "cpu"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("capabilities", "{not json"),
        ("capabilities", "[1, 2]"),
        ("resident_models", '{"a": 1}'),
        ("metrics", '{"queue_depth": "many"}'),
        ("last_heartbeat", "yesterday"),
        ("gpu", "{not json"),
        ("gpu", '{"gpu_id": "0"}'),
        ("gpu", "[7]"),
        ("gpu", '[{"name": "no id", "sampled_at": 1.0}]'),
        ("gpu", '[{"gpu_id": "0", "util_pct": "hot", "sampled_at": 1.0}]'),
        ("metrics_port", "ninety-one"),
    ],
)
def test_malformed_worker_fields_raise_registry_decode_error(field: str, value: str) -> None:
    """Every malformed field surfaces as RegistryDecodeError, never a bare ValueError/KeyError."""
    fields = RECORD.encode() | {field: value}
    with pytest.raises(RegistryDecodeError):
        WorkerRecord.decode(fields)


def test_a_missing_worker_field_is_named_in_the_error() -> None:
    """The error says which field the hash lacks."""
    fields = RECORD.encode()
    del fields["addr"]
    with pytest.raises(RegistryDecodeError, match="addr"):
        WorkerRecord.decode(fields)


def test_routing_settings_round_trip() -> None:
    """decode(encode(s)) == s for a settings value with every field set."""
    settings = RoutingSettings(
        strategy=Strategy.CAPABILITY_AWARE,
        prefer_resident_models=False,
        resident_weight=0.5,
        required_capabilities=("streaming", "ssml"),
        worker_priority=(PriorityRule("piper", 1), PriorityRule("kokoro", 2)),
        overflow_threshold=9,
    )
    assert RoutingSettings.decode(settings.encode(), RoutingSettings()) == settings


def test_routing_fields_missing_from_redis_keep_the_fallback() -> None:
    """Only the fields present override the configured values."""
    fallback = RoutingSettings(overflow_threshold=11, required_capabilities=("streaming",))
    decoded = RoutingSettings.decode({"load_balancing_strategy": "round_robin"}, fallback)
    assert decoded == RoutingSettings(
        strategy=Strategy.ROUND_ROBIN, overflow_threshold=11, required_capabilities=("streaming",)
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"load_balancing_strategy": "fastest"},
        {"resident_weight": "heavy"},
        {"worker_priority": "[{}]"},
        {"worker_priority": "7"},
        {"overflow_threshold": "2.5"},
        {"required_capabilities": "streaming"},
    ],
)
def test_malformed_routing_fields_raise_registry_decode_error(fields: dict[str, str]) -> None:
    """Bad values in the routing hash raise RegistryDecodeError (the view then falls back)."""
    with pytest.raises(RegistryDecodeError):
        RoutingSettings.decode(fields, RoutingSettings())


def test_strategy_names_are_the_guides() -> None:
    """The five strategy strings of the deployment guide."""
    assert {s.value for s in Strategy} == {
        "least_loaded",
        "prefer_resident",
        "round_robin",
        "capability_aware",
        "priority",
    }
