"""Prometheus metrics of one worker process, and the HTTP server that serves them.

Each :class:`WorkerPromMetrics` owns its own `CollectorRegistry` (never the global default),
so several workers can live in one process (tests) without clashing. Every series carries
the `worker` label (the worker's name); the only other labels are `model` (a catalog id) and
`outcome`, so label values stay bounded: never a session id nor a reference's hash. The GPU
gauges live in :mod:`duplex.worker.gpu_sampler` and join the same registry only where a GPU
exists.

Who records what (nothing here is recorded by anything but the code path named):

- `duplex_worker_sessions_active`: the servicer, as Synthesize streams open and close;
- `duplex_worker_queue_depth`: the scheduler's own count of queued + running clause jobs,
  read at scrape time;
- `duplex_worker_underruns_total`: a session, once per gap in audio its client waited for;
- `duplex_worker_synthesis_seconds`, `duplex_worker_rtf`: the scheduler, per clause job that
  completed (time inside the engine; RTF = that time / the audio's duration);
- `duplex_worker_first_frame_seconds`: a session, from an utterance's first text to its first
  frame sent;
- `duplex_worker_model_*`, `duplex_worker_resident_models`: the model manager;
- `duplex_worker_zero_shot_conditioning_total` (`outcome` hit or miss) and
  `duplex_worker_zero_shot_conditioning_seconds` (misses: computing a new reference's
  conditioning): a zero-shot voice's conditioning cache, as it decides, once the model manager
  has connected it (`zero_shot.watch_conditioning(voice, model_id, partial(
  metrics.zero_shot_conditioning, model_id))`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from enum import StrEnum
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LOG = logging.getLogger(__name__)

_SYNTH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
_FIRST_FRAME_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0)
_LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# A reference's conditioning: a few hundred ms on a GPU, seconds on a CPU.
_CONDITIONING_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

METRIC_NAMES: tuple[str, ...] = (
    "duplex_worker_sessions_active",
    "duplex_worker_queue_depth",
    "duplex_worker_underruns_total",
    "duplex_worker_synthesis_seconds",
    "duplex_worker_rtf",
    "duplex_worker_first_frame_seconds",
    "duplex_worker_model_loads_total",
    "duplex_worker_model_evictions_total",
    "duplex_worker_model_load_seconds",
    "duplex_worker_resident_models",
    "duplex_worker_model_resident",
    "duplex_worker_model_provider",
    "duplex_worker_zero_shot_conditioning_total",
    "duplex_worker_zero_shot_conditioning_seconds",
)
"""Every series family name a worker exports besides the GPU gauges (histograms add
`_bucket`, `_sum` and `_count`; counters are named here with their `_total`)."""


class LoadOutcome(StrEnum):
    """The `outcome` label of `duplex_worker_model_loads_total`."""

    OK = "ok"
    ERROR = "error"
    OOM = "oom"


ZERO_SHOT_OUTCOMES = ("hit", "miss")
"""The `outcome` label of `duplex_worker_zero_shot_conditioning_total` (zero_shot.CacheResult)."""


class WorkerPromMetrics:
    """The worker's metrics and the calls that record them (thread-safe, as prometheus_client
    is: the scheduler records from its inference threads)."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        w = ["worker"]
        wm = ["worker", "model"]
        self._sessions_active = Gauge(
            "duplex_worker_sessions_active", "Synthesize streams open.", w, registry=r
        ).labels(worker=worker)
        self._queue_depth = Gauge(
            "duplex_worker_queue_depth",
            "Clause jobs on the synthesis scheduler, queued plus running.",
            w,
            registry=r,
        ).labels(worker=worker)
        self._underruns = Counter(
            "duplex_worker_underruns",
            "Gaps in audio a client was waiting for (counted once per gap).",
            w,
            registry=r,
        ).labels(worker=worker)
        self._synthesis_seconds = Histogram(
            "duplex_worker_synthesis_seconds",
            "Time inside the engine for one completed clause job.",
            wm,
            buckets=_SYNTH_BUCKETS,
            registry=r,
        )
        self._rtf = Histogram(
            "duplex_worker_rtf",
            "Real-time factor of one completed clause job: synthesis seconds per audio second.",
            wm,
            buckets=_RTF_BUCKETS,
            registry=r,
        )
        self._first_frame_seconds = Histogram(
            "duplex_worker_first_frame_seconds",
            "From an utterance's first text to its first audio frame sent.",
            w,
            buckets=_FIRST_FRAME_BUCKETS,
            registry=r,
        ).labels(worker=worker)
        self._model_loads = Counter(
            "duplex_worker_model_loads",
            "Model loads finished, by outcome (ok, error, oom).",
            ["worker", "model", "outcome"],
            registry=r,
        )
        self._model_evictions = Counter(
            "duplex_worker_model_evictions",
            "Models unloaded by the manager to make room or after their idle TTL.",
            wm,
            registry=r,
        )
        self._model_load_seconds = Histogram(
            "duplex_worker_model_load_seconds",
            "Time to load and warm up a model (successful loads).",
            wm,
            buckets=_LOAD_BUCKETS,
            registry=r,
        )
        self._resident_models = Gauge(
            "duplex_worker_resident_models", "Models loaded and ready.", w, registry=r
        ).labels(worker=worker)
        self._model_resident = Gauge(
            "duplex_worker_model_resident",
            "1 while the model is loaded and ready, else 0.",
            wm,
            registry=r,
        )
        self._model_provider = Gauge(
            "duplex_worker_model_provider",
            "1 for the execution provider that really runs the loaded model (onnxruntime's "
            "session.get_providers()[0], e.g. CUDAExecutionProvider or CPUExecutionProvider).",
            ["worker", "model", "provider"],
            registry=r,
        )
        self._providers: dict[str, str] = {}  # model -> the provider label set for it
        self._zero_shot = Counter(
            "duplex_worker_zero_shot_conditioning",
            "Zero-shot sessions' conditioning lookups: hit (a reference seen before, from the "
            "cache) or miss (computed).",
            ["worker", "model", "outcome"],
            registry=r,
        )
        self._zero_shot_seconds = Histogram(
            "duplex_worker_zero_shot_conditioning_seconds",
            "Time to compute a new reference's conditioning (cache misses that succeeded).",
            wm,
            buckets=_CONDITIONING_BUCKETS,
            registry=r,
        )

    # -- the servicer -------------------------------------------------------------------

    def session_opened(self) -> None:
        self._sessions_active.inc()

    def session_closed(self) -> None:
        self._sessions_active.dec()

    # -- the scheduler ------------------------------------------------------------------

    def watch_queue_depth(self, depth: Callable[[], float]) -> None:
        """Read the queue depth from `depth()` at every scrape (the scheduler's own count)."""
        self._queue_depth.set_function(depth)

    def clause_synthesized(self, model_id: str, synth_s: float, audio_s: float) -> None:
        """One clause job completed: `synth_s` in the engine for `audio_s` of audio."""
        self._synthesis_seconds.labels(worker=self.worker, model=model_id).observe(synth_s)
        if audio_s > 0:
            self._rtf.labels(worker=self.worker, model=model_id).observe(synth_s / audio_s)

    # -- a session ----------------------------------------------------------------------

    def underrun(self) -> None:
        self._underruns.inc()

    def first_frame(self, seconds: float) -> None:
        self._first_frame_seconds.observe(max(0.0, seconds))

    # -- the model manager --------------------------------------------------------------

    def model_loaded(self, model_id: str, seconds: float) -> None:
        self._model_loads.labels(worker=self.worker, model=model_id, outcome=LoadOutcome.OK).inc()
        self._model_load_seconds.labels(worker=self.worker, model=model_id).observe(seconds)

    def model_load_failed(self, model_id: str, outcome: LoadOutcome) -> None:
        self._model_loads.labels(worker=self.worker, model=model_id, outcome=outcome).inc()

    def model_evicted(self, model_id: str) -> None:
        self._model_evictions.labels(worker=self.worker, model=model_id).inc()

    def residency(self, model_id: str, resident: bool, resident_count: int) -> None:
        """`model_id` became resident (or stopped being); `resident_count` are now."""
        self._model_resident.labels(worker=self.worker, model=model_id).set(int(resident))
        self._resident_models.set(resident_count)
        if not resident:
            self.model_provider(model_id, None)

    def model_provider(self, model_id: str, provider: str | None) -> None:
        """The provider that runs `model_id` now (None: unloaded, or not an ONNX model)."""
        old = self._providers.pop(model_id, None)
        if old is not None:
            self._model_provider.remove(self.worker, model_id, old)
        if provider is not None:
            self._providers[model_id] = provider
            labels = {"worker": self.worker, "model": model_id, "provider": provider}
            self._model_provider.labels(**labels).set(1)

    # -- a zero-shot voice's conditioning cache --------------------------------------

    def zero_shot_conditioning(self, model_id: str, outcome: str, compute_s: float | None) -> None:
        """One lookup: `outcome` hit or miss; `compute_s` for a miss that computed (None
        when it raised, or for a hit). The shape of zero_shot.ConditioningObserver once
        `model_id` is bound."""
        if outcome not in ZERO_SHOT_OUTCOMES:
            raise ValueError(f"zero-shot outcome must be one of {ZERO_SHOT_OUTCOMES}: {outcome!r}")
        labels = {"worker": self.worker, "model": model_id}
        self._zero_shot.labels(**labels, outcome=outcome).inc()
        if compute_s is not None:
            self._zero_shot_seconds.labels(**labels).observe(max(0.0, compute_s))


class MetricsServer:
    """`/metrics` over HTTP from a thread (prometheus_client's server, bound to one address)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._registry = registry
        self._host = host
        self._port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        """The bound (host, port) while serving."""
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> int:
        """Bind and serve; returns the bound port. OSError when the port cannot be bound."""
        self._server, self._thread = start_http_server(
            self._port, addr=self._host, registry=self._registry
        )
        return int(self._server.server_address[1])

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving and close the socket (blocking: call it from a thread)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()  # returns once serve_forever has left its loop (0.5 s polls)
        server.server_close()
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                _LOG.warning("metrics server thread still running after stop")


def load_outcome(exc: BaseException) -> LoadOutcome:
    """`oom` for an out-of-memory failure (host or GPU), else `error`.

    Engines report a GPU OOM in their own types (torch's OutOfMemoryError, onnxruntime's
    RuntimeException "Failed to allocate memory", CUDA's "out of memory"), so the type name
    and message are read as well as MemoryError.
    """
    if isinstance(exc, MemoryError) or "OutOfMemory" in type(exc).__name__:
        return LoadOutcome.OOM
    text = str(exc).lower()
    if "out of memory" in text or "failed to allocate memory" in text:
        return LoadOutcome.OOM
    return LoadOutcome.ERROR
