"""Which models are resident: loading, sharing, reference counting and eviction.

All methods run on the worker's event loop; blocking work (loading, warm-up, closing)
goes to threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import partial
from types import TracebackType

from duplex.worker.adapters.base import Adapter, AdapterOptions, Voice, adapter_for
from duplex.worker.adapters.zero_shot import watch_conditioning
from duplex.worker.catalog import Catalog, LocalPiperVoice, ModelDir, ModelSpec, UnknownModel
from duplex.worker.metrics import LoadOutcome, WorkerPromMetrics, load_outcome

__all__ = [
    "CapacityExhausted",
    "Lease",
    "LoadResult",
    "ModelBusy",
    "ModelLoadFailed",
    "ModelManager",
    "ModelManagerConfig",
    "ModelOutOfMemory",
    "UnknownModel",
]

_LOG = logging.getLogger(__name__)


class CapacityExhausted(Exception):
    """Loading would exceed ``resident_cap`` and no resident model is idle."""

    def __init__(self, model_id: str, cap: int, busy: tuple[str, ...]) -> None:
        self.model_id = model_id
        self.cap = cap
        self.busy = busy
        super().__init__(
            f"cannot load {model_id!r}: resident_cap={cap} reached and every resident "
            f"model is in use ({', '.join(busy)})"
        )


class ModelBusy(Exception):
    """The model cannot be unloaded now (in use, loading, or the default)."""

    def __init__(self, model_id: str, reason: str) -> None:
        self.model_id = model_id
        self.reason = reason
        super().__init__(f"cannot unload {model_id!r}: {reason}")


class ModelLoadFailed(Exception):
    """The adapter could not load or warm up the model."""

    def __init__(self, model_id: str, reason: str) -> None:
        self.model_id = model_id
        self.reason = reason
        super().__init__(f"failed to load model {model_id!r}: {reason}")


class ModelOutOfMemory(CapacityExhausted, ModelLoadFailed):
    """The load ran out of (GPU or host) memory; the model is left unloaded.

    A CapacityExhausted, so the servicer answers RESOURCE_EXHAUSTED (the orchestrator
    tries another worker) rather than UNAVAILABLE."""

    def __init__(self, model_id: str, reason: str) -> None:
        self.model_id = model_id
        self.reason = reason
        self.cap = 0
        self.busy = ()
        Exception.__init__(self, f"out of memory loading model {model_id!r}: {reason}")


@dataclass(frozen=True)
class ModelManagerConfig:
    """The guide's ``model_manager:`` section (times in milliseconds)."""

    default_model_id: str
    preload_model_ids: tuple[str, ...] = ()
    resident_cap: int = 2
    ttl_ms: int = 600_000  # 0 = never evict for idleness
    min_residency_ms: int = 120_000
    max_parallel_loads: int = 1
    warmup_text: str = "Warming up."
    voices: tuple[LocalPiperVoice, ...] = ()  # the operator's own Piper voices
    model_dirs: tuple[ModelDir, ...] = ()  # GPU models' weights (else XTTS_MODEL_DIR, ...)

    def __post_init__(self) -> None:
        if self.resident_cap < 1:
            raise ValueError(f"resident_cap must be >= 1, got {self.resident_cap}")
        if self.ttl_ms < 0 or self.min_residency_ms < 0:
            raise ValueError("ttl_ms and min_residency_ms must be >= 0")
        if self.max_parallel_loads < 1:
            raise ValueError(f"max_parallel_loads must be >= 1, got {self.max_parallel_loads}")
        wanted = {self.default_model_id, *self.preload_model_ids}
        if len(wanted) > self.resident_cap:
            # Otherwise the last preloads would evict the first ones at start.
            raise ValueError(
                f"default + preload_model_ids name {len(wanted)} models, "
                f"more than resident_cap={self.resident_cap}"
            )


@dataclass(frozen=True)
class LoadResult:
    """Outcome of :meth:`ModelManager.load`; ``loaded_now`` is False if it was resident."""

    model_id: str
    loaded_now: bool
    load_ms: float


class _State(Enum):
    LOADING = "loading"
    RESIDENT = "resident"


class _Slot:
    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.state = _State.LOADING
        self.task: asyncio.Task[None] | None = None
        self.voice: Voice | None = None
        self.refcount = 0
        self.waiters = 0  # acquirers awaiting the load: they make the model busy too
        self.loaded_at = 0.0
        self.last_used = 0.0
        self.load_ms = 0.0

    @property
    def idle(self) -> bool:
        return self.state is _State.RESIDENT and self.refcount == 0 and self.waiters == 0


class Lease:
    """One session's hold on a resident model; ``release()`` is idempotent."""

    def __init__(self, manager: ModelManager, slot: _Slot, voice: Voice) -> None:
        self.voice = voice
        self.model_id = slot.spec.model_id
        self._manager = manager
        self._slot = slot
        self._released = False

    @property
    def released(self) -> bool:
        """Whether release() was called."""
        return self._released

    def release(self) -> None:
        """Drop the reference (call on the event loop thread)."""
        if not self._released:
            self._released = True
            self._manager._release(self._slot)

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class ModelManager:
    """Loads models on demand and keeps at most ``resident_cap`` of them.

    - The default model is loaded by :meth:`start` and always stays resident: it is never
      evicted (neither by the cap nor by idleness) and cannot be unloaded.
    - Loading beyond the cap evicts the least recently used idle model (no references, no
      one waiting for it); if every resident model is busy it raises CapacityExhausted.
      Models being loaded count towards the cap, so it is never exceeded.
    - :meth:`evict_idle` unloads models idle for ``ttl_ms`` (0 = never) and resident for at
      least ``min_residency_ms``.
    - Concurrent requests for one model share one load; at most ``max_parallel_loads``
      loads run at once, each in a thread and followed by a warm-up synthesis.
    """

    def __init__(
        self,
        catalog: Catalog,
        config: ModelManagerConfig,
        options: AdapterOptions,
        *,
        clock: Callable[[], float] = time.monotonic,
        adapters: Callable[[str], Adapter] = adapter_for,
        metrics: WorkerPromMetrics | None = None,
    ) -> None:
        self._catalog = catalog
        self._config = config
        self._options = options
        self._clock = clock
        self._adapters = adapters
        self._slots: dict[str, _Slot] = {}
        self._load_sem = asyncio.Semaphore(config.max_parallel_loads)
        self._closed = False
        self._metrics = metrics
        if metrics is not None:
            for model_id in catalog.ids():  # true zeros: nothing is resident before start()
                metrics.residency(model_id, False, 0)

    @property
    def default_model_id(self) -> str:
        """The model used when a session names none."""
        return self._config.default_model_id

    @property
    def resident_cap(self) -> int:
        """The most models resident (or loading) at once."""
        return self._config.resident_cap

    async def start(self) -> None:
        """Load the default model (ModelLoadFailed is fatal for the worker), then preloads."""
        default = self._config.default_model_id
        if default not in self._catalog:
            raise ModelLoadFailed(default, str(UnknownModel(default, self._catalog.ids())))
        await self.load(default)
        for model_id in self._config.preload_model_ids:
            try:
                await self.load(model_id)
            except (UnknownModel, CapacityExhausted, ModelLoadFailed) as exc:
                _LOG.warning("preload failed", extra={"model_id": model_id, "error": str(exc)})

    async def acquire(self, model_id: str | None) -> Lease:
        """A lease on ``model_id`` (None = the default), loading it first if needed."""
        slot = await self._ensure(model_id or self._config.default_model_id)
        assert slot.voice is not None  # _ensure returns resident slots only
        slot.refcount += 1
        slot.last_used = self._clock()
        return Lease(self, slot, slot.voice)

    async def load(self, model_id: str) -> LoadResult:
        """Make ``model_id`` resident (an explicit LoadModel); no reference is kept."""
        was_resident = self.is_loaded(model_id)
        slot = await self._ensure(model_id)
        slot.last_used = self._clock()
        if was_resident:
            return LoadResult(model_id, loaded_now=False, load_ms=0.0)
        return LoadResult(model_id, loaded_now=True, load_ms=slot.load_ms)

    async def unload(self, model_id: str) -> None:
        """Unload an idle model; ModelBusy if referenced, loading or the default."""
        self._catalog.get(model_id)  # UnknownModel for ids not in the catalog
        slot = self._slots.get(model_id)
        if slot is None:
            return
        if model_id == self._config.default_model_id:
            raise ModelBusy(model_id, "it is the default model, which stays resident")
        if slot.state is _State.LOADING:
            raise ModelBusy(model_id, "it is being loaded")
        if not slot.idle:
            raise ModelBusy(model_id, f"{slot.refcount} session(s) use it")
        await self._close_slots([self._remove(slot)])

    def resident(self) -> tuple[str, ...]:
        """Models loaded and ready, in load order."""
        return tuple(m for m, s in self._slots.items() if s.state is _State.RESIDENT)

    def loading(self) -> tuple[str, ...]:
        """Models being loaded now."""
        return tuple(m for m, s in self._slots.items() if s.state is _State.LOADING)

    def is_loaded(self, model_id: str) -> bool:
        """Whether ``model_id`` is resident and ready."""
        slot = self._slots.get(model_id)
        return slot is not None and slot.state is _State.RESIDENT

    def refcount(self, model_id: str) -> int:
        """Active leases on ``model_id`` (0 if not resident)."""
        slot = self._slots.get(model_id)
        return slot.refcount if slot is not None else 0

    async def evict_idle(self) -> list[str]:
        """One pass of the idle-TTL rule; returns the unloaded model ids."""
        ttl_s = self._config.ttl_ms / 1000
        if ttl_s <= 0:
            return []
        now = self._clock()
        min_s = self._config.min_residency_ms / 1000
        victims = [
            slot
            for model_id, slot in self._slots.items()
            if model_id != self._config.default_model_id
            and slot.idle
            and now - slot.last_used >= ttl_s
            and now - slot.loaded_at >= min_s
        ]
        for slot in victims:
            self._remove(slot)
            self._evicted(slot)
            _LOG.info("evicted idle model", extra={"model_id": slot.spec.model_id})
        await self._close_slots(victims)
        return [slot.spec.model_id for slot in victims]

    async def run_evictions(self, interval_s: float = 1.0) -> None:
        """Run :meth:`evict_idle` every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.evict_idle()
            except Exception:  # task boundary: keep evicting on the next round
                _LOG.exception("idle eviction failed")

    async def close(self) -> None:
        """Cancel loads in progress and unload every model."""
        self._closed = True
        tasks = [s.task for s in self._slots.values() if s.task is not None and not s.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        slots = list(self._slots.values())
        for slot in slots:
            if slot.refcount:
                _LOG.warning(
                    "closing model still in use",
                    extra={"model_id": slot.spec.model_id, "refcount": slot.refcount},
                )
            self._remove(slot)
        await self._close_slots(slots)

    async def _ensure(self, model_id: str) -> _Slot:
        if self._closed:
            raise RuntimeError("model manager is closed")
        spec = self._catalog.get(model_id)
        slot = self._slots.get(model_id)
        if slot is not None and slot.state is _State.RESIDENT:
            return slot
        victims: list[_Slot] = []
        if slot is None:
            victims = self._make_room(model_id)
            slot = _Slot(spec)
            self._slots[model_id] = slot
            slot.task = asyncio.create_task(self._load(slot), name=f"load {model_id}")
            slot.task.add_done_callback(_retrieve_exception)
        assert slot.task is not None
        slot.waiters += 1
        try:
            if victims:
                await self._close_slots(victims)
            # Shielded: an acquirer that goes away must not cancel a load others wait for.
            await asyncio.shield(slot.task)
        finally:
            slot.waiters -= 1
        if self._closed or slot.voice is None:
            raise RuntimeError("model manager is closed")
        return slot

    def _make_room(self, model_id: str) -> list[_Slot]:
        """Evict LRU idle models until one more fits; synchronous so nothing interleaves."""
        excess = len(self._slots) + 1 - self._config.resident_cap
        if excess <= 0:
            return []
        candidates = sorted(
            (s for m, s in self._slots.items() if s.idle and m != self._config.default_model_id),
            key=lambda s: s.last_used,
        )
        if len(candidates) < excess:
            raise CapacityExhausted(model_id, self._config.resident_cap, tuple(self._slots))
        victims = [self._remove(slot) for slot in candidates[:excess]]
        for victim in victims:
            self._evicted(victim)
            _LOG.info(
                "evicted least recently used model",
                extra={"model_id": victim.spec.model_id, "for_model_id": model_id},
            )
        return victims

    async def _load(self, slot: _Slot) -> None:
        spec = slot.spec
        try:
            async with self._load_sem:
                started = time.perf_counter()
                loop = asyncio.get_running_loop()
                future = loop.run_in_executor(None, self._load_blocking, spec)
                try:
                    voice = await asyncio.shield(future)
                except asyncio.CancelledError:
                    future.add_done_callback(_close_loaded_voice)
                    raise
                load_ms = (time.perf_counter() - started) * 1000
        except asyncio.CancelledError:
            self._remove(slot)
            raise
        except Exception as exc:
            self._remove(slot)
            await asyncio.to_thread(release_cuda_cache)  # what a failed (OOM) load left
            if self._metrics is not None:
                self._metrics.model_load_failed(spec.model_id, load_outcome(exc))
            _LOG.error(
                "model load failed",
                extra={"model_id": spec.model_id, "error": f"{type(exc).__name__}: {exc}"},
            )
            reason = f"{type(exc).__name__}: {exc}"
            if load_outcome(exc) is LoadOutcome.OOM:
                raise ModelOutOfMemory(spec.model_id, reason) from exc
            raise ModelLoadFailed(spec.model_id, reason) from exc
        slot.voice = voice
        if self._metrics is not None:
            watch_conditioning(
                voice, spec.model_id, partial(self._metrics.zero_shot_conditioning, spec.model_id)
            )
        slot.state = _State.RESIDENT
        slot.load_ms = load_ms
        slot.loaded_at = slot.last_used = self._clock()
        if self._metrics is not None:
            self._metrics.model_loaded(spec.model_id, load_ms / 1000)
            provider = getattr(voice, "provider", None)  # what really runs an ONNX model
            if isinstance(provider, str):
                self._metrics.model_provider(spec.model_id, provider)
        self._publish_residency(spec.model_id)
        _LOG.info("model loaded", extra={"model_id": spec.model_id, "load_ms": round(load_ms)})

    def _load_blocking(self, spec: ModelSpec) -> Voice:
        voice = self._adapters(spec.family).load(spec, self._options)
        try:
            # Warm-up: the first inference allocates buffers and is several times slower.
            warmup = spec.params.get("warmup_text") or self._config.warmup_text
            for _ in voice.synthesize(warmup):
                pass
        except BaseException:
            voice.close()
            raise
        return voice

    def _release(self, slot: _Slot) -> None:
        slot.refcount = max(0, slot.refcount - 1)
        slot.last_used = self._clock()

    def _remove(self, slot: _Slot) -> _Slot:
        if self._slots.get(slot.spec.model_id) is slot:
            del self._slots[slot.spec.model_id]
            self._publish_residency(slot.spec.model_id)
        return slot

    def _evicted(self, slot: _Slot) -> None:
        # Evictions are the manager's own choice (cap or idle TTL); an UnloadModel is not one.
        if self._metrics is not None:
            self._metrics.model_evicted(slot.spec.model_id)

    def _publish_residency(self, model_id: str) -> None:
        if self._metrics is not None:
            resident = self.resident()
            self._metrics.residency(model_id, model_id in resident, len(resident))

    @staticmethod
    async def _close_slots(slots: list[_Slot]) -> None:
        for slot in slots:
            voice, slot.voice = slot.voice, None
            if voice is not None:
                try:
                    await asyncio.to_thread(voice.close)
                except Exception:  # the model is gone from the manager either way
                    _LOG.exception("closing model failed", extra={"model_id": slot.spec.model_id})
        if slots:
            await asyncio.to_thread(release_cuda_cache)


def release_cuda_cache() -> None:
    """Hand torch's cached GPU blocks back to the driver after a model is dropped.

    Only when an adapter has imported torch: a CPU worker never loads it."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    with contextlib.suppress(Exception):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _retrieve_exception(task: asyncio.Task[None]) -> None:
    # Waiters see the error through their shield; this keeps asyncio from warning when
    # every waiter went away before the load finished.
    if not task.cancelled():
        task.exception()


def _close_loaded_voice(future: asyncio.Future[Voice]) -> None:
    # A load cancelled by close() still finishes in its thread: free what it produced.
    if future.cancelled() or future.exception() is not None:
        return
    with contextlib.suppress(Exception):
        future.result().close()
