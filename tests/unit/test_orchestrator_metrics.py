"""Orchestrator metrics: a private registry per instance, bounded labels, text exposition."""

from __future__ import annotations

from duplex.orchestrator.metrics import CONTENT_TYPE, OrchestratorMetrics
from prometheus_client import REGISTRY


def test_each_instance_has_its_own_registry() -> None:
    """Two instances count separately and never touch the global default registry."""
    a, b = OrchestratorMetrics(), OrchestratorMetrics()
    a.failovers_total.inc()
    assert a.registry.get_sample_value("duplex_orch_failovers_total") == 1
    assert b.registry.get_sample_value("duplex_orch_failovers_total") == 0
    assert REGISTRY.get_sample_value("duplex_orch_failovers_total") is None


def test_render_is_prometheus_text_with_labelled_samples() -> None:
    """render() gives the text format with the labelled samples that were recorded."""
    m = OrchestratorMetrics()
    m.sessions_total.labels(transport="websocket", outcome="client_end").inc(2)
    m.routing_decisions_total.labels(strategy="least_loaded", worker="w@0").inc()
    m.protocol_errors_total.labels(code="TEXT_TOO_LONG").inc()
    m.first_audio_seconds.observe(0.12)
    m.sessions_active.labels(transport="webrtc").set(3)
    text = m.render().decode()
    assert 'duplex_orch_sessions_total{outcome="client_end",transport="websocket"} 2.0' in text
    assert 'duplex_orch_routing_decisions_total{strategy="least_loaded",worker="w@0"} 1.0' in text
    assert 'duplex_orch_protocol_errors_total{code="TEXT_TOO_LONG"} 1.0' in text
    assert 'duplex_orch_first_audio_seconds_bucket{le="0.15"} 1.0' in text
    assert 'duplex_orch_sessions_active{transport="webrtc"} 3.0' in text
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_no_metric_is_labelled_by_session() -> None:
    """Label names stay bounded (worker, strategy, outcome, code, transport, policy, reason);
    never a session id."""
    m = OrchestratorMetrics()
    m.sessions_total.labels(transport="websocket", outcome="client_end").inc()
    m.barge_ins_total.labels(transport="webrtc", policy="stop").inc()
    m.webrtc_signalling_errors_total.labels(reason="malformed_sdp").inc()
    m.routing_decisions_total.labels(strategy="round_robin", worker="w").inc()
    m.worker_errors_total.labels(worker="w").inc()
    m.protocol_errors_total.labels(code="CAPACITY").inc()
    labels = {name for metric in m.registry.collect() for s in metric.samples for name in s.labels}
    assert labels == {
        "worker",
        "strategy",
        "outcome",
        "code",
        "transport",
        "policy",
        "reason",
        "le",
    }
