"""Prometheus metrics of one orchestrator process.

Each `OrchestratorMetrics` owns its own `CollectorRegistry` (never the global default), so
several apps can live in one process (tests) without clashing. Label values stay bounded:
worker names, strategies, outcomes and error codes, never a session id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

# The classic text format: every Prometheus server version scrapes it.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

_LATENCY_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0)
_DECISION_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01)
_LATENESS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
_DETECT_BUCKETS = (0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
_CUT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.1)


class OrchestratorMetrics:
    """The orchestrator's metrics; `render()` gives the Prometheus text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sessions_active = Gauge(
            "duplex_orch_sessions_active",
            "Client sessions currently open, by transport.",
            ["transport"],
            registry=r,
        )
        self.sessions_total = Counter(
            "duplex_orch_sessions",
            "Client sessions ended, by transport and outcome (client_end, disconnected, "
            "idle_timeout, error).",
            ["transport", "outcome"],
            registry=r,
        )
        self.first_audio_seconds = Histogram(
            "duplex_orch_first_audio_seconds",
            "From an utterance's first text to its first audio frame sent to the client.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.routing_decisions_total = Counter(
            "duplex_orch_routing_decisions",
            "Sessions routed, by strategy and chosen worker.",
            ["strategy", "worker"],
            registry=r,
        )
        self.routing_decision_seconds = Histogram(
            "duplex_orch_routing_decision_seconds",
            "Time to choose a worker for one session.",
            buckets=_DECISION_BUCKETS,
            registry=r,
        )
        self.failovers_total = Counter(
            "duplex_orch_failovers", "Sessions moved to another worker mid-stream.", registry=r
        )
        self.worker_errors_total = Counter(
            "duplex_orch_worker_errors",
            "Worker streams that failed (error, timeout or disconnect), by worker.",
            ["worker"],
            registry=r,
        )
        self.frames_sent_total = Counter(
            "duplex_orch_frames_sent", "20 ms audio frames sent to clients.", registry=r
        )
        self.frame_send_lateness_seconds = Histogram(
            "duplex_orch_frame_send_lateness_seconds",
            "How late each audio frame left the pacer against its real-time deadline.",
            buckets=_LATENESS_BUCKETS,
            registry=r,
        )
        self.protocol_errors_total = Counter(
            "duplex_orch_protocol_errors",
            "Error messages sent to clients, by code.",
            ["code"],
            registry=r,
        )
        self.ws_connections_rejected_total = Counter(
            "duplex_orch_ws_connections_rejected",
            "Client connections (any transport) refused because max_connections was reached.",
            registry=r,
        )
        self.ws_clients_not_reading_total = Counter(
            "duplex_orch_ws_clients_not_reading",
            "WebSocket clients closed (1008) because their unread audio stayed above "
            "transport.websocket.max_client_backlog_ms.",
            registry=r,
        )

        self.barge_ins_total = Counter(
            "duplex_orch_barge_ins",
            "Times a user's speech cut the system's output, by transport and policy.",
            ["transport", "policy"],
            registry=r,
        )
        self.barge_in_outcomes_total = Counter(
            "duplex_orch_barge_in_outcomes",
            "Held barge-ins settled: resumed (a false interruption) or stopped.",
            ["outcome"],
            registry=r,
        )
        self.barge_in_detect_seconds = Histogram(
            "duplex_orch_barge_in_detect_seconds",
            "Barge-in, speech onset in the mic audio to the VAD's decision (audio time).",
            ["transport"],
            buckets=_DETECT_BUCKETS,
            registry=r,
        )
        self.barge_in_cut_seconds = Histogram(
            "duplex_orch_barge_in_cut_seconds",
            "Barge-in, from the mic frame that decided it to the output's last frame sent.",
            ["transport"],
            buckets=_CUT_BUCKETS,
            registry=r,
        )
        self.webrtc_peers = Gauge(
            "duplex_orch_webrtc_peers", "WebRTC peer connections open.", registry=r
        )
        self.webrtc_signalling_errors_total = Counter(
            "duplex_orch_webrtc_signalling_errors",
            "WebRTC offers or requests refused, by reason (malformed_sdp, no_audio, ...).",
            ["reason"],
            registry=r,
        )
        self.mic_frames_total = Counter(
            "duplex_orch_mic_frames",
            "20 ms mic frames received from clients, by transport.",
            ["transport"],
            registry=r,
        )
        self.api_requests_total = Counter(
            "duplex_orch_api_requests",
            "Requests to the compatible APIs (openai, wyoming), by final status: the HTTP "
            "status, 499 client gone mid-stream, 502 broken after audio; wyoming: ok or a code.",
            ["api", "status"],
            registry=r,
        )
        self.api_first_audio_seconds = Histogram(
            "duplex_orch_api_first_audio_seconds",
            "Compatible APIs: from a request's arrival to its first audio bytes sent.",
            ["api"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition format (version 0.0.4) of every metric."""
        return generate_latest(self.registry)
