"""GPU discovery through NVML (nvidia-ml-py): name, total and free memory, honouring CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from lf_tuner.errors import BadValue
from lf_tuner.memory import Budget


@dataclass(frozen=True)
class GpuInfo:
    index: int  # physical NVML index
    name: str
    total_bytes: int
    free_bytes: int
    uuid: str = ""


class GpuSummary(TypedDict):
    """A GPU as the plan, the run record (GpuRecord's fields) and `doctor` show it, sizes in GiB."""

    index: int
    name: str
    total_gib: float
    free_gib: float


def gpu_summary(gpu: GpuInfo) -> GpuSummary:
    """The GPU's summary, sizes rounded to 0.01 GiB."""
    return {
        "index": gpu.index,
        "name": gpu.name,
        "total_gib": round(gpu.total_bytes / 2**30, 2),
        "free_gib": round(gpu.free_bytes / 2**30, 2),
    }


def _nvml_gpus() -> list[GpuInfo]:
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver, no GPU: NVML raises its own error types
        return []
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            gpus.append(
                GpuInfo(
                    i,
                    name.decode() if isinstance(name, bytes) else str(name),
                    int(mem.total),
                    int(mem.free),
                    uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                )
            )
        return gpus
    finally:
        pynvml.nvmlShutdown()


def visible(gpus: list[GpuInfo], cuda_visible: str | None) -> list[GpuInfo]:
    """The GPUs CUDA_VISIBLE_DEVICES leaves visible, in its order (indices or UUID prefixes)."""
    if cuda_visible is None:
        return list(gpus)
    out: list[GpuInfo] = []
    for item in (part.strip() for part in cuda_visible.split(",")):
        if not item:
            continue
        if item.isdigit():
            match = [g for g in gpus if g.index == int(item)]
        else:
            match = [g for g in gpus if g.uuid and g.uuid.startswith(item)]
        if not match:
            break  # CUDA stops at the first invalid entry
        out.append(match[0])
    return out


GPUS_HELP = "use all, a count (2), positions among the visible GPUs (0, or 0,2), or cpu"


@dataclass(frozen=True)
class GpuSelection:
    """A parsed `--gpus` value: every visible GPU, the first `count`, or these `positions` among them."""

    count: int | None = None
    positions: tuple[int, ...] | None = None


def parse_gpus(select: str | None) -> GpuSelection:
    """`all` (or None); a count `N` (the first N visible GPUs); or positions `0,2` (`1,` for GPU 1 alone). `0`
    means GPU 0, since a count of zero GPUs means nothing. Anything else is a `BadValue` for `--gpus`."""
    if select is None or select.strip().lower() == "all":
        return GpuSelection()
    text = select.strip()
    if not text:
        raise BadValue(f"empty; {GPUS_HELP}", param="--gpus")
    if "," not in text:
        if not text.isdigit():
            raise BadValue(f"`{select}` is not a GPU selection; {GPUS_HELP}", param="--gpus")
        count = int(text)
        return GpuSelection(positions=(0,)) if count == 0 else GpuSelection(count=count)
    parts = [part.strip() for part in text.split(",")]
    if parts[-1] == "":
        parts.pop()  # `1,`: GPU 1 alone
    positions: list[int] = []
    for part in parts:
        if not part.isdigit():
            what = "an empty position" if not part else f"`{part}`"
            raise BadValue(
                f"`{select}` has {what}; positions are whole numbers from 0, like 0,2", param="--gpus"
            )
        if int(part) in positions:
            raise BadValue(f"`{select}` lists GPU {int(part)} twice; name each GPU once", param="--gpus")
        positions.append(int(part))
    return GpuSelection(positions=tuple(positions))


def select_gpus(gpus: list[GpuInfo], select: str | None) -> list[GpuInfo]:
    """The GPUs `select` (a `--gpus` value, see `parse_gpus`) picks among the visible `gpus`."""
    chosen = parse_gpus(select)
    if chosen.count is not None:
        if chosen.count > len(gpus):
            raise BadValue(
                f"asked for {chosen.count} GPUs, {len(gpus)} visible (for GPU {chosen.count} alone write "
                f"`{chosen.count},`)",
                param="--gpus",
            )
        return gpus[: chosen.count]
    if chosen.positions is None:
        return list(gpus)
    missing = [i for i in chosen.positions if i >= len(gpus)]
    if missing:
        seen = f"0..{len(gpus) - 1}" if gpus else "none"
        raise BadValue(
            f"GPU {missing[0]} is not visible ({len(gpus)} visible: {seen}); check `nvidia-smi` "
            "and CUDA_VISIBLE_DEVICES",
            param="--gpus",
        )
    return [gpus[i] for i in chosen.positions]


def named_gpus(select: str | None) -> list[int]:
    """The GPU positions a `--gpus` value names on its own, for planning where NVML sees no GPU: positions as
    written, a count N as 0..N-1; [] for `all` (which names none)."""
    chosen = parse_gpus(select)
    if chosen.count is not None:
        return list(range(chosen.count))
    return list(chosen.positions or ())


def detect_gpus(select: str | None = None) -> list[GpuInfo]:
    """Visible GPUs (after CUDA_VISIBLE_DEVICES), narrowed by `select`; [] without NVML or GPUs."""
    parse_gpus(select)  # a bad value is an error even where no GPU is seen
    gpus = visible(_nvml_gpus(), os.environ.get("CUDA_VISIBLE_DEVICES"))
    if not gpus:
        return []
    return select_gpus(gpus, select)


class ProcessGroupPeak:
    """Polls NVML for the GPU memory of every process in one session (the child and its torchrun workers).

    The peak is per GPU, the sum over the session's processes, as nvidia-smi shows it (CUDA context
    included): the figure `estimate` predicts. `peak_bytes` is None when NVML is missing or never saw
    one of the processes (PID namespaces in some containers hide them).
    """

    def __init__(self, session_id: int, interval_s: float = 0.2) -> None:
        self.session_id = session_id
        self.interval_s = interval_s
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ProcessGroupPeak:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # no NVML, no driver: nothing to measure
            return self
        self._thread = threading.Thread(target=self._run, args=(pynvml,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _in_session(self, pid: int) -> bool:
        try:
            return os.getsid(pid) == self.session_id
        except OSError:
            return False

    def _run(self, nvml: Any) -> None:
        try:
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
            while not self._stop.is_set():
                for index, handle in enumerate(handles):
                    try:
                        procs = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
                    except Exception:
                        continue
                    used = sum(p.usedGpuMemory or 0 for p in procs if self._in_session(p.pid))
                    if used:
                        self.peaks[index] = max(self.peaks.get(index, 0), int(used))
                self._stop.wait(self.interval_s)
        finally:
            nvml.nvmlShutdown()

    @property
    def peak_bytes(self) -> int | None:
        return max(self.peaks.values()) if self.peaks else None


def fit_target(gpu_memory_gib: float | None, count: int | None) -> tuple[int, int]:
    """(bytes per GPU, GPU count) to fit a config to (`render --fit`): `--gpu-memory` and `--gpus`, else the
    detected GPUs (the smallest one's total memory)."""
    found = detect_gpus()
    if gpu_memory_gib is None and not found:
        raise BadValue("no GPU found; pass --gpu-memory GIB (per GPU)", param="--fit")
    per_gpu = int(gpu_memory_gib * 2**30) if gpu_memory_gib is not None else min(g.total_bytes for g in found)
    return per_gpu, count or max(1, len(found))


def smallest_gpu_gib() -> float | None:
    """The total memory of the smallest visible GPU in GiB; None without NVML or GPUs."""
    gpus = detect_gpus()
    return min(g.total_bytes for g in gpus) / 2**30 if gpus else None


def budgets(gpu_memory_gib: float | None = None) -> list[Budget]:
    """What to check a run against: `gpu_memory_gib` (`--gpu-memory`), else every detected GPU's free memory."""
    if gpu_memory_gib is not None:
        return [Budget(f"{gpu_memory_gib:g} GiB GPU", int(gpu_memory_gib * 2**30))]
    return gpu_budgets(detect_gpus())


def gpu_budgets(gpus: Sequence[GpuInfo]) -> list[Budget]:
    """What a run is checked against on these GPUs: each one's free memory."""
    return [
        Budget(f"GPU {g.index} ({g.name}, {g.free_bytes / 2**30:.1f} GiB free)", g.free_bytes) for g in gpus
    ]
