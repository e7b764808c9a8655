"""GPU detection through NVML, with a fake NVML module and on this machine."""

from __future__ import annotations

from typing import Any

from duplex.worker.devices import DeviceInfo, describe, detect_devices


class FakeNvml:
    """Enough of pynvml for detect_devices."""

    class NVMLError(Exception):
        pass

    class NVMLError_LibraryNotFound(NVMLError):
        pass

    def __init__(self, gpus: list[tuple[str, str]], init_error: Exception | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> Any:
        return self.gpus[handle][0].encode()  # older bindings return bytes

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return self.gpus[handle][1]


GPUS = [("NVIDIA H100", "GPU-aaaa"), ("NVIDIA A10", "GPU-bbbb"), ("NVIDIA L4", "GPU-cccc")]


def test_lists_every_gpu_when_cuda_visible_devices_is_unset() -> None:
    """Without CUDA_VISIBLE_DEVICES all NVML devices count, names decoded, NVML shut down."""
    nvml = FakeNvml(GPUS)
    info = detect_devices(environ={}, nvml=nvml)
    assert info == DeviceInfo(None, 3, ("NVIDIA H100", "NVIDIA A10", "NVIDIA L4"), None)
    assert nvml.shutdowns == 1
    assert describe(info) == "GPU 0: NVIDIA H100; GPU 1: NVIDIA A10; GPU 2: NVIDIA L4"


def test_cuda_visible_devices_picks_and_renumbers_gpus() -> None:
    """CUDA_VISIBLE_DEVICES=2 shows only the third GPU, as CUDA device 0."""
    info = detect_devices(environ={"CUDA_VISIBLE_DEVICES": "2"}, nvml=FakeNvml(GPUS))
    assert (info.gpu_count, info.gpu_names) == (1, ("NVIDIA L4",))
    assert describe(info) == "GPU 0: NVIDIA L4"


def test_cuda_visible_devices_accepts_uuids_and_stops_at_an_invalid_entry() -> None:
    """UUID prefixes select GPUs in the given order; an unknown entry ends the list."""
    env = {"CUDA_VISIBLE_DEVICES": "GPU-bbbb,0,7,2"}
    info = detect_devices(environ=env, nvml=FakeNvml(GPUS))
    assert info.gpu_names == ("NVIDIA A10", "NVIDIA H100")


def test_empty_cuda_visible_devices_hides_every_gpu() -> None:
    """CUDA_VISIBLE_DEVICES='' (or -1) means CPU only."""
    for value in ("", "-1"):
        info = detect_devices(environ={"CUDA_VISIBLE_DEVICES": value}, nvml=FakeNvml(GPUS))
        assert info.gpu_count == 0
        assert describe(info) == f"no GPU (CUDA_VISIBLE_DEVICES={value!r})"


def test_missing_nvml_library_reads_no_gpu() -> None:
    """NVMLError_LibraryNotFound at init is reported as 'no GPU', not raised."""
    nvml = FakeNvml(GPUS, init_error=FakeNvml.NVMLError_LibraryNotFound("gone"))
    info = detect_devices(environ={}, nvml=nvml)
    assert (info.gpu_count, info.error) == (0, "NVML library not found")
    assert describe(info) == "no GPU (NVML library not found)"


def test_other_nvml_errors_are_reported_with_their_text() -> None:
    """Any NVMLError (e.g. a driver mismatch) becomes the error text."""
    nvml = FakeNvml(GPUS, init_error=FakeNvml.NVMLError("Driver/library version mismatch"))
    info = detect_devices(environ={"CUDA_VISIBLE_DEVICES": "0"}, nvml=nvml)
    assert info == DeviceInfo("0", 0, (), "Driver/library version mismatch")


def test_real_detection_never_raises() -> None:
    """On this machine (GPU or not) detection returns a consistent DeviceInfo."""
    info = detect_devices()
    assert info.gpu_count == len(info.gpu_names)
    if info.gpu_count == 0:
        assert describe(info).startswith("no GPU")
    else:
        assert describe(info).startswith("GPU 0: ")
