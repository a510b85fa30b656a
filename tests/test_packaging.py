from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_ships_templates_and_presets(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    wheel = next(tmp_path.glob("lf_tuner-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for folder in ("templates", "presets"):
        shipped = [n for n in names if n.startswith(f"lf_tuner/{folder}/") and not n.endswith("/")]
        on_disk = [
            p for p in (ROOT / "lf_tuner" / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts
        ]
        assert shipped, f"no {folder} in the wheel"
        assert len(shipped) == len(on_disk)
    assert "lf_tuner/py.typed" in names


def test_package_data_loads_through_importlib_resources() -> None:
    for folder in ("templates", "presets"):
        entries = [e.name for e in (files("lf_tuner") / folder).iterdir()]
        assert entries, folder


def test_version_and_help() -> None:
    from click.testing import CliRunner

    from lf_tuner import __version__
    from lf_tuner.cli import cli

    assert CliRunner().invoke(cli, ["--version"]).output == f"lf-tuner, version {__version__}\n"
    helped = CliRunner().invoke(cli, ["--help"])
    assert helped.exit_code == 0 and "estimate" in helped.output


def test_readme_cli_reference_is_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_cli_reference.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
