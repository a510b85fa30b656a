"""Every measured calibration row stays in the band the README states, so its accuracy table cannot rot.

The rows are calibration/*.jsonl and, when it is beside the repository (CI has ../shared), the shared
vram_h100.jsonl: real LLaMA-Factory 0.9.5 runs on an H100 with the peak nvidia-smi showed (calibration/README.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lf_tuner.memory import (
    CALIBRATION_OVER_LIMIT_PCT as OVER_LIMIT_PCT,
)
from lf_tuner.memory import (
    CALIBRATION_UNDER_LIMIT_PCT as UNDER_LIMIT_PCT,
)
from lf_tuner.memory import (
    calibration_files,
    read_calibration,
)

ROOT = Path(__file__).resolve().parent.parent
ROWS = read_calibration(calibration_files(ROOT))


def test_the_project_has_its_calibration_rows() -> None:
    own = [r for r in ROWS if r.file == "vram_h100_lf_tuner.jsonl"]
    assert len(own) == 37
    assert len({r.id for r in own}) == len(own)


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.file}:{r.id}" for r in ROWS])
def test_row_within_the_stated_band(row) -> None:
    assert UNDER_LIMIT_PCT <= row.error_pct <= OVER_LIMIT_PCT, (
        f"{row.id}: estimate {row.estimated_gib:.2f} GiB vs measured {row.measured_gib:.2f} GiB "
        f"({row.error_pct:+.1f}%); the README promises {UNDER_LIMIT_PCT}%..+{OVER_LIMIT_PCT}%"
    )


def test_mean_error_as_the_readme_states() -> None:
    mean = sum(abs(r.error_pct) for r in ROWS) / len(ROWS)
    assert mean <= 2.0, f"mean |error| {mean:.2f}% over {len(ROWS)} rows; the README states 1.9%"
