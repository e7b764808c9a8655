"""Model manager rules with a fake adapter and a fake clock."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
from duplex.worker.adapters.base import AdapterOptions
from duplex.worker.catalog import Catalog, ModelSpec
from duplex.worker.model_manager import (
    CapacityExhausted,
    LoadResult,
    ModelBusy,
    ModelLoadFailed,
    ModelManager,
    ModelManagerConfig,
    UnknownModel,
)

IDS = ("m0", "m1", "m2", "m3")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeVoice:
    sample_rate = 16000

    def __init__(self, model_id: str, fail_warmup: bool = False) -> None:
        self.model_id = model_id
        self.texts: list[str] = []
        self.closed = False
        self._fail_warmup = fail_warmup

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        self.texts.append(text)
        if self._fail_warmup:
            raise RuntimeError("warm-up exploded")
        yield np.zeros(160, np.int16)

    def close(self) -> None:
        self.closed = True


class FakeAdapter:
    """Counts loads, tracks how many run at once, can block on a gate or fail."""

    name = "fake"

    def __init__(self) -> None:
        self.loads: Counter[str] = Counter()
        self.voices: dict[str, list[FakeVoice]] = {}
        self.fail: set[str] = set()
        self.fail_warmup: set[str] = set()
        self.gate: threading.Event | None = None
        self.active = 0
        self.max_active = 0
        self.entered = threading.Semaphore(0)
        self._lock = threading.Lock()

    def load(self, spec: ModelSpec, options: AdapterOptions) -> FakeVoice:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.entered.release()
        try:
            if self.gate is not None:
                assert self.gate.wait(5)
            with self._lock:
                self.loads[spec.model_id] += 1
            if spec.model_id in self.fail:
                raise OSError(f"cannot read weights of {spec.model_id}")
            voice = FakeVoice(spec.model_id, spec.model_id in self.fail_warmup)
            self.voices.setdefault(spec.model_id, []).append(voice)
            return voice
        finally:
            with self._lock:
                self.active -= 1

    def voice(self, model_id: str) -> FakeVoice:
        return self.voices[model_id][-1]


def _catalog() -> Catalog:
    return Catalog(
        ModelSpec(m, "fake", ("en",), ("streaming",), 16000, "fake model", {}) for m in IDS
    )


def _manager(
    adapter: FakeAdapter, clock: FakeClock | None = None, **config: object
) -> ModelManager:
    settings: dict[str, object] = {"default_model_id": "m0", "min_residency_ms": 0}
    settings.update(config)
    return ModelManager(
        _catalog(),
        ModelManagerConfig(**settings),  # type: ignore[arg-type]
        AdapterOptions(),
        clock=clock or FakeClock(),
        adapters=lambda family: adapter,
    )


async def _wait_entered(adapter: FakeAdapter, count: int = 1) -> None:
    for _ in range(count):
        assert await asyncio.to_thread(adapter.entered.acquire, True, 5)


async def test_start_loads_default_and_preloads_with_warmup() -> None:
    """start() loads the default and the preloads, each warmed up once with the warm-up text."""
    adapter = FakeAdapter()
    manager = _manager(adapter, preload_model_ids=("m1",), warmup_text="Hi there.")
    await manager.start()
    assert manager.resident() == ("m0", "m1")
    assert adapter.voice("m0").texts == ["Hi there."]
    assert adapter.voice("m1").texts == ["Hi there."]
    assert manager.default_model_id == "m0"
    await manager.close()


async def test_default_load_failure_is_fatal_with_a_clear_message() -> None:
    """A default model that cannot load makes start() raise ModelLoadFailed naming it."""
    adapter = FakeAdapter()
    adapter.fail.add("m0")
    manager = _manager(adapter)
    with pytest.raises(ModelLoadFailed, match=r"'m0'.*cannot read weights") as info:
        await manager.start()
    assert info.value.model_id == "m0"
    assert manager.resident() == ()


async def test_unknown_default_fails_start_naming_known_ids() -> None:
    """A default id missing from the catalog fails start() and lists the known ids."""
    manager = _manager(FakeAdapter(), default_model_id="nope")
    with pytest.raises(ModelLoadFailed, match=r"nope.*m0, m1, m2, m3"):
        await manager.start()


async def test_failed_preload_is_logged_not_fatal() -> None:
    """A preload that fails leaves the worker up with its default model."""
    adapter = FakeAdapter()
    adapter.fail.add("m1")
    manager = _manager(adapter, preload_model_ids=("m1",))
    await manager.start()
    assert manager.resident() == ("m0",)
    await manager.close()


def test_config_rejects_more_preloads_than_the_cap() -> None:
    """Default plus preloads beyond resident_cap is a configuration error."""
    with pytest.raises(ValueError, match="resident_cap"):
        ModelManagerConfig(default_model_id="m0", preload_model_ids=("m1", "m2"), resident_cap=2)


async def test_acquire_none_means_default_and_counts_references() -> None:
    """acquire(None) leases the default; refcount follows leases; release is idempotent."""
    adapter = FakeAdapter()
    manager = _manager(adapter)
    await manager.start()
    first = await manager.acquire(None)
    second = await manager.acquire("m0")
    assert first.model_id == "m0" and first.voice is adapter.voice("m0")
    assert second.voice is first.voice  # one model shared, no copy per session
    assert manager.refcount("m0") == 2
    first.release()
    first.release()
    assert manager.refcount("m0") == 1
    with second:
        pass
    assert manager.refcount("m0") == 0
    assert adapter.loads["m0"] == 1
    await manager.close()


async def test_acquire_unknown_model_raises_unknown_model() -> None:
    """An id outside the catalog raises UnknownModel listing the known ids."""
    manager = _manager(FakeAdapter())
    await manager.start()
    with pytest.raises(UnknownModel) as info:
        await manager.acquire("ghost")
    assert info.value.known == IDS
    await manager.close()


async def test_load_reports_whether_it_loaded() -> None:
    """load() says loaded_now for a new model and not for a resident one."""
    manager = _manager(FakeAdapter())
    await manager.start()
    first = await manager.load("m1")
    assert first.model_id == "m1" and first.loaded_now and first.load_ms >= 0
    assert await manager.load("m1") == LoadResult("m1", loaded_now=False, load_ms=0.0)
    await manager.close()


async def test_cap_evicts_the_least_recently_used_idle_model() -> None:
    """At the cap, a new load unloads the idle model used longest ago and closes it."""
    adapter, clock = FakeAdapter(), FakeClock()
    manager = _manager(adapter, clock, resident_cap=3)
    await manager.start()
    (await manager.acquire("m1")).release()
    clock.advance(1)
    (await manager.acquire("m2")).release()
    clock.advance(1)
    (await manager.acquire("m1")).release()  # m1 is now more recent than m2
    clock.advance(1)
    await manager.load("m3")
    assert set(manager.resident()) == {"m0", "m1", "m3"}
    assert adapter.voice("m2").closed
    assert not adapter.voice("m1").closed
    await manager.close()


async def test_default_model_is_never_evicted_by_the_cap() -> None:
    """Even idle and least recently used, the default model stays resident."""
    adapter, clock = FakeAdapter(), FakeClock()
    manager = _manager(adapter, clock, resident_cap=2)
    await manager.start()
    clock.advance(10)
    (await manager.acquire("m1")).release()
    await manager.load("m2")
    assert manager.resident() == ("m0", "m2")
    assert adapter.voice("m1").closed and not adapter.voice("m0").closed
    await manager.close()


async def test_load_beyond_cap_with_every_model_busy_is_refused() -> None:
    """If no resident model is idle, loading raises CapacityExhausted and the cap holds."""
    adapter = FakeAdapter()
    manager = _manager(adapter, resident_cap=2)
    await manager.start()
    lease = await manager.acquire("m1")
    with pytest.raises(CapacityExhausted) as info:
        await manager.acquire("m2")
    assert info.value.cap == 2 and set(info.value.busy) == {"m0", "m1"}
    assert manager.resident() == ("m0", "m1")
    assert adapter.loads["m2"] == 0
    lease.release()
    await manager.acquire("m2")  # m1 is idle now, so it can make room
    assert manager.resident() == ("m0", "m2")
    await manager.close()


async def test_models_being_loaded_count_towards_the_cap() -> None:
    """A load in progress holds a place: a second new model is refused, not squeezed in."""
    adapter = FakeAdapter()
    manager = _manager(adapter, resident_cap=2)
    await manager.start()
    adapter.gate = threading.Event()
    loading = asyncio.create_task(manager.acquire("m1"))
    await _wait_entered(adapter, 2)  # m0 at start, then m1
    assert manager.loading() == ("m1",)
    with pytest.raises(CapacityExhausted):
        await manager.acquire("m2")
    adapter.gate.set()
    (await loading).release()
    await manager.close()


async def test_idle_ttl_evicts_after_ttl_but_not_the_default() -> None:
    """evict_idle() unloads models idle for ttl_ms; the default stays; ttl counts from release."""
    adapter, clock = FakeAdapter(), FakeClock()
    manager = _manager(adapter, clock, resident_cap=3, ttl_ms=1000)
    await manager.start()
    lease = await manager.acquire("m1")
    clock.advance(5)  # in use all along: not idle
    assert await manager.evict_idle() == []
    lease.release()
    clock.advance(0.9)
    assert await manager.evict_idle() == []
    clock.advance(0.1)
    assert await manager.evict_idle() == ["m1"]
    assert manager.resident() == ("m0",)
    assert adapter.voice("m1").closed
    await manager.close()


async def test_ttl_eviction_respects_minimum_residency() -> None:
    """An idle model is kept until it has been resident for min_residency_ms."""
    adapter, clock = FakeAdapter(), FakeClock()
    manager = _manager(adapter, clock, ttl_ms=1000, min_residency_ms=5000)
    await manager.start()
    await manager.load("m1")
    clock.advance(2)
    assert await manager.evict_idle() == []
    clock.advance(2.9)
    assert await manager.evict_idle() == []
    clock.advance(0.1)
    assert await manager.evict_idle() == ["m1"]
    await manager.close()


async def test_ttl_zero_never_evicts() -> None:
    """ttl_ms=0 turns idle eviction off."""
    adapter, clock = FakeAdapter(), FakeClock()
    manager = _manager(adapter, clock, ttl_ms=0)
    await manager.start()
    await manager.load("m1")
    clock.advance(10**6)
    assert await manager.evict_idle() == []
    assert manager.is_loaded("m1")
    await manager.close()


async def test_run_evictions_loop_applies_the_ttl() -> None:
    """The background loop evicts idle models and stops when cancelled."""
    adapter, clock = FakeAdapter(), FakeClock()
    manager = _manager(adapter, clock, ttl_ms=1000)
    await manager.start()
    await manager.load("m1")
    clock.advance(2)
    task = asyncio.create_task(manager.run_evictions(interval_s=0.001))
    for _ in range(1000):
        if not manager.is_loaded("m1"):
            break
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not manager.is_loaded("m1")
    await manager.close()


async def test_concurrent_acquires_share_one_load() -> None:
    """Many sessions asking for one unloaded model load it once and share the voice."""
    adapter = FakeAdapter()
    manager = _manager(adapter)
    await manager.start()
    adapter.gate = threading.Event()
    tasks = [asyncio.create_task(manager.acquire("m1")) for _ in range(5)]
    await _wait_entered(adapter, 2)
    adapter.gate.set()
    leases = await asyncio.gather(*tasks)
    assert adapter.loads["m1"] == 1
    assert len({id(lease.voice) for lease in leases}) == 1
    assert manager.refcount("m1") == 5
    for lease in leases:
        lease.release()
    await manager.close()


async def test_a_cancelled_waiter_does_not_cancel_the_shared_load() -> None:
    """If one acquirer goes away mid-load, the others still get the model."""
    adapter = FakeAdapter()
    manager = _manager(adapter)
    await manager.start()
    adapter.gate = threading.Event()
    quitter = asyncio.create_task(manager.acquire("m1"))
    stayer = asyncio.create_task(manager.acquire("m1"))
    await _wait_entered(adapter, 2)
    quitter.cancel()
    adapter.gate.set()
    lease = await stayer
    assert quitter.cancelled()
    assert manager.refcount("m1") == 1 and adapter.loads["m1"] == 1
    lease.release()
    await manager.close()


@pytest.mark.parametrize("limit", [1, 2])
async def test_parallel_loads_are_limited(limit: int) -> None:
    """No more than max_parallel_loads adapter loads run at the same time."""
    adapter = FakeAdapter()
    manager = _manager(adapter, resident_cap=4, max_parallel_loads=limit)
    await manager.start()
    adapter.gate = threading.Event()
    tasks = [asyncio.create_task(manager.load(m)) for m in ("m1", "m2", "m3")]
    await _wait_entered(adapter, 1 + limit)
    await asyncio.sleep(0.05)  # room for a load that should not start
    assert adapter.active == limit
    adapter.gate.set()
    await asyncio.gather(*tasks)
    assert adapter.max_active == limit
    assert set(manager.resident()) == set(IDS)
    await manager.close()


async def test_unload_of_a_busy_model_raises_model_busy() -> None:
    """unload() refuses a referenced model or the default, and frees an idle one."""
    adapter = FakeAdapter()
    manager = _manager(adapter)
    await manager.start()
    lease = await manager.acquire("m1")
    with pytest.raises(ModelBusy, match="1 session"):
        await manager.unload("m1")
    with pytest.raises(ModelBusy, match="default"):
        await manager.unload("m0")
    lease.release()
    await manager.unload("m1")
    assert not manager.is_loaded("m1") and manager.refcount("m1") == 0
    assert adapter.voice("m1").closed
    await manager.unload("m1")  # not resident: nothing to do
    with pytest.raises(UnknownModel):
        await manager.unload("ghost")
    await manager.close()


async def test_failed_load_reaches_every_waiter_and_can_be_retried() -> None:
    """A load error is ModelLoadFailed for all waiters; the model is not resident; retry works."""
    adapter = FakeAdapter()
    manager = _manager(adapter)
    await manager.start()
    adapter.fail.add("m1")
    results = await asyncio.gather(
        manager.acquire("m1"), manager.acquire("m1"), return_exceptions=True
    )
    assert all(isinstance(r, ModelLoadFailed) for r in results)
    assert adapter.loads["m1"] == 1
    assert not manager.is_loaded("m1") and manager.loading() == ()
    adapter.fail.clear()
    (await manager.acquire("m1")).release()
    assert manager.is_loaded("m1")
    await manager.close()


async def test_warmup_failure_fails_the_load_and_closes_the_voice() -> None:
    """A model that cannot synthesize its warm-up text is not made resident."""
    adapter = FakeAdapter()
    adapter.fail_warmup.add("m1")
    manager = _manager(adapter)
    await manager.start()
    with pytest.raises(ModelLoadFailed, match="warm-up exploded"):
        await manager.load("m1")
    assert adapter.voice("m1").closed
    assert not manager.is_loaded("m1")
    await manager.close()


async def test_close_unloads_everything() -> None:
    """close() closes every resident voice and refuses later acquires."""
    adapter = FakeAdapter()
    manager = _manager(adapter, preload_model_ids=("m1",))
    await manager.start()
    await manager.close()
    assert manager.resident() == ()
    assert adapter.voice("m0").closed and adapter.voice("m1").closed
    with pytest.raises(RuntimeError, match="closed"):
        await manager.acquire(None)


async def test_close_during_a_load_closes_the_late_voice() -> None:
    """A load still running at close() is cancelled and its voice freed when it arrives."""
    adapter = FakeAdapter()
    manager = _manager(adapter)
    await manager.start()
    adapter.gate = threading.Event()
    pending = asyncio.create_task(manager.load("m1"))
    await _wait_entered(adapter, 2)
    await manager.close()
    with pytest.raises(asyncio.CancelledError):
        await pending
    adapter.gate.set()
    for _ in range(500):
        if "m1" in adapter.voices and adapter.voice("m1").closed:
            break
        await asyncio.sleep(0.01)
    assert adapter.voice("m1").closed
