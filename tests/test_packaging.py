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
    for folder in ("templates", "presets"):  # top-level folders, shipped inside the package
        shipped = sorted(n for n in names if n.startswith(f"lf_tuner/{folder}/") and not n.endswith("/"))
        on_disk = sorted(
            f"lf_tuner/{p.relative_to(ROOT).as_posix()}"
            for p in (ROOT / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        )
        assert shipped, f"no {folder} in the wheel"
        assert shipped == on_disk
    modules = sorted(
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "lf_tuner").rglob("*.py")
        if "__pycache__" not in p.parts
    )
    assert [m for m in modules if m not in names] == [], "a package is missing from pyproject's list"
    assert "lf_tuner/py.typed" in names
    assert "lf_tuner/config/llamafactory_schema.json" in names
    assert {"lf_tuner/models/registry.json", "lf_tuner/models/configs.json"} <= set(
        names
    )  # the model catalog


def test_package_data_loads_through_importlib_resources() -> None:
    from lf_tuner.resources import shipped

    for folder in ("templates", "presets"):
        entries = [e.name for e in shipped(folder).iterdir()]
        assert entries, folder
        assert sorted(entries) == sorted(e.name for e in files(f"lf_tuner.{folder}").iterdir())


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


@pytest.mark.parametrize("package", ["config", "train", "sweep"])
def test_lazy_packages_export_their_api(package: str) -> None:
    """`__all__` is what the package imports under TYPE_CHECKING (the one list lf_tuner.lazy reads) and what it
    defines itself; every name resolves; none is also a submodule's name (the submodule would shadow it once
    imported); importing the package loads none of its modules (render needs jinja2, the records pydantic...)."""
    import importlib
    import pkgutil

    from lf_tuner.lazy import typing_imports

    pkg = importlib.import_module(f"lf_tuner.{package}")
    imported = typing_imports(pkg.__file__)
    defined = [name for name in pkg.__all__ if name in vars(pkg)]
    assert sorted(pkg.__all__) == sorted([*imported, *defined])
    assert all(module.startswith(f"lf_tuner.{package}.") for module in imported.values())
    for name in pkg.__all__:
        assert getattr(pkg, name) is not None
    submodules = {m.name for m in pkgutil.iter_modules(pkg.__path__)}
    assert not submodules & set(pkg.__all__)
    code = f"import sys, lf_tuner.{package}; print(sorted(m for m in sys.modules if m.startswith('lf_tuner.{package}.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
