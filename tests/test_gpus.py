from __future__ import annotations

import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from lf_tuner.errors import BadValue
from lf_tuner.train import collect_metrics
from lf_tuner.train.gpus import GpuInfo, ProcessGroupPeak, detect_gpus, named_gpus, select_gpus, visible

GPUS = [GpuInfo(i, "NVIDIA RTX 4090", 24 << 30, 23 << 30, f"GPU-{i}abc") for i in range(3)]


@pytest.mark.parametrize(
    "select, expected",
    [(None, [0, 1, 2]), ("all", [0, 1, 2]), ("2", [0, 1]), ("0", [0]), ("1,", [1]), ("0,2", [0, 2])],
)
def test_select_gpus(select, expected) -> None:
    assert [g.index for g in select_gpus(GPUS, select)] == expected


@pytest.mark.parametrize(
    "select, message",
    [
        ("4", r"^asked for 4 GPUs, 3 visible \(for GPU 4 alone write `4,`\)$"),
        ("0,5", r"^GPU 5 is not visible \(3 visible: 0\.\.2\); check `nvidia-smi` and CUDA_VISIBLE_DEVICES$"),
        ("5,", r"^GPU 5 is not visible"),
        ("a,b", r"^`a,b` has `a`; positions are whole numbers from 0, like 0,2$"),
        ("abc", r"^`abc` is not a GPU selection; use all, a count \(2\), positions among the visible GPUs"),
        ("-1", r"^`-1` is not a GPU selection"),
        ("0,-1", r"^`0,-1` has `-1`; positions are whole numbers from 0"),
        ("0,0", r"^`0,0` lists GPU 0 twice; name each GPU once$"),
        ("1,,2", r"^`1,,2` has an empty position"),
        ("", r"^empty; use all, a count"),
        ("  ", r"^empty; use all, a count"),
        ("1.5", r"^`1.5` is not a GPU selection"),
    ],
)
def test_select_gpus_errors(select: str, message: str) -> None:
    with pytest.raises(BadValue, match=message) as info:
        select_gpus(GPUS, select)
    assert info.value.param == "--gpus"


@pytest.mark.parametrize(
    "select, named",
    [(None, []), ("all", []), ("ALL", []), ("0", [0]), ("00", [0]), ("3", [0, 1, 2]), ("2,", [2]),
     ("4, 1", [4, 1])],
)  # fmt: skip
def test_named_gpus_without_nvml(select: str | None, named: list[int]) -> None:
    assert named_gpus(select) == named


def test_a_bad_selection_is_refused_where_nvml_sees_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import lf_tuner.train.gpus

    monkeypatch.setattr(lf_tuner.train.gpus, "_nvml_gpus", lambda: [])
    assert detect_gpus("0,1") == []
    for bad in ("abc", "0,0", "-1", ""):
        with pytest.raises(BadValue):
            detect_gpus(bad)


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
            deadline = time.monotonic() + 60  # only a guard against a hang: the poll is waited for, not timed
            while not peak.peaks and time.monotonic() < deadline:
                time.sleep(0.01)
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
    assert (nvml.measured_peak_gib, nvml.measured_source) == (4.0, "nvml")
    torch_only = collect_metrics(tmp_path, log, on_gpu=True)
    assert torch_only.measured_source == "torch reserved + CUDA context"
    assert torch_only.measured_peak_gib == pytest.approx(3.0 + 758 / 1024, abs=1e-3)
    assert collect_metrics(tmp_path, log, on_gpu=False).measured_peak_gib is None
