from __future__ import annotations

import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from lf_tuner.errors import BadValue
from lf_tuner.train.gpus import GpuInfo, ProcessGroupPeak, select_gpus, visible
from lf_tuner.train.records import collect_metrics

GPUS = [GpuInfo(i, "NVIDIA RTX 4090", 24 << 30, 23 << 30, f"GPU-{i}abc") for i in range(3)]


@pytest.mark.parametrize(
    "select, expected",
    [(None, [0, 1, 2]), ("all", [0, 1, 2]), ("2", [0, 1]), ("0", [0]), ("1,", [1]), ("0,2", [0, 2])],
)
def test_select_gpus(select, expected) -> None:
    assert [g.index for g in select_gpus(GPUS, select)] == expected


@pytest.mark.parametrize(
    "select, message",
    [("4", r"asked for 4 GPUs, 3 visible \(for GPU 4 alone write `4,`\)"), ("0,5", "GPU 5 is not visible"),
     ("a,b", "use all, a count")],
)  # fmt: skip
def test_select_gpus_errors(select, message) -> None:
    with pytest.raises(BadValue, match=message):
        select_gpus(GPUS, select)


def test_cuda_visible_devices_order_and_uuids() -> None:
    assert [g.index for g in visible(GPUS, "2,0")] == [2, 0]
    assert [g.index for g in visible(GPUS, "GPU-1")] == [1]
    assert visible(GPUS, "") == []


def _fake_nvml(monkeypatch: pytest.MonkeyPatch, pids: list[tuple[int, int]]) -> None:
    """A stand-in pynvml with one GPU whose compute processes are `pids` (pid, bytes)."""
    nvml = types.ModuleType("pynvml")
    nvml.nvmlInit = lambda: None  # type: ignore[attr-defined]
    nvml.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = lambda: 1  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetComputeRunningProcesses = lambda h: [  # type: ignore[attr-defined]
        types.SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in pids
    ]
    monkeypatch.setitem(sys.modules, "pynvml", nvml)


def test_process_group_peak_counts_only_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    me = os.getpid()
    # A process in a session of its own stands for another user's job on the same GPU.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        assert os.getsid(other.pid) != os.getsid(me)
        gone = 2**22 + 1  # above the kernel's pid_max: a process that has already exited
        _fake_nvml(monkeypatch, [(me, 3 << 30), (other.pid, 5 << 30), (gone, 7 << 30)])
        with ProcessGroupPeak(os.getsid(me), interval_s=0.01) as peak:
            time.sleep(0.1)
    finally:
        other.kill()
        other.wait()
    assert peak.peak_bytes == 3 << 30


def test_process_group_peak_without_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    with ProcessGroupPeak(os.getsid(os.getpid())) as peak:
        pass
    assert peak.peak_bytes is None


def test_measured_peak_prefers_nvml_else_reserved_plus_context(tmp_path: Path) -> None:
    log = [{"current_steps": 1, "loss": 2.0, "vram_reserved": 3.0}]
    nvml = collect_metrics(tmp_path, log, on_gpu=True, nvml_peak_bytes=4 << 30)
    assert (nvml["measured_peak_gib"], nvml["measured_source"]) == (4.0, "nvml")
    torch_only = collect_metrics(tmp_path, log, on_gpu=True)
    assert torch_only["measured_source"] == "torch reserved + CUDA context"
    assert torch_only["measured_peak_gib"] == pytest.approx(3.0 + 758 / 1024, abs=1e-3)
    assert collect_metrics(tmp_path, log, on_gpu=False)["measured_peak_gib"] is None
