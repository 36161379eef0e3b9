"""Packaging: the package list is complete, and both editable and regular installs import
from outside the repository with py.typed shipped and the console script declared."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"compiler": "mapc", "ir": "mapc.ir", "passes": "mapc.passes", "targets": "mapc.targets"}
IMPORT_ALL = "import mapc, mapc.ir, mapc.passes, mapc.targets, mapc.testing, mapc.cli; print(mapc.__file__)"


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed():
    listed = set(pyproject()["tool"]["setuptools"]["packages"])
    found = set()
    for folder, package in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            if "__pycache__" in relative.parts:
                continue
            found.add(".".join([package, *relative.parts]))
    assert found == listed


def test_installed_package_imports_from_outside_the_repository(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_file()


def test_regular_install_from_a_wheel(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True, text=True,
    )
    if build.returncode != 0 and not os.environ.get("CI"):
        pytest.skip(f"cannot build a wheel here (no package index?): {build.stderr.strip().splitlines()[-1:]}")
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "dist").glob("mapc-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "mapc/py.typed" in names
    assert {"mapc/ir/model.py", "mapc/passes/cleanup.py", "mapc/testing/strategies.py", "mapc/targets/__init__.py"} <= names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "mapc = mapc.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True, text=True,
    )
    assert install.returncode == 0, install.stderr
    code = f"import sys; sys.path.insert(0, {str(site)!r}); " + IMPORT_ALL
    done = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(site))


def _locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[_canonical(name)] = version
    return pins


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _requirements() -> list[tuple[str, str | None]]:
    """(name, lower bound) of every dependency and extra in pyproject.toml."""
    project = pyproject()["project"]
    specs = [*project["dependencies"], *(s for extra in project["optional-dependencies"].values() for s in extra)]
    found = []
    for spec in specs:
        name, _, bound = spec.partition(">=")
        found.append((_canonical(name.split("[")[0].strip()), bound.split(",")[0].strip() or None))
    return found


def test_the_lock_pins_every_dependency_at_or_above_its_lower_bound():
    """CI installs constraints.txt: it must cover every declared dependency, pip and setuptools,
    and never pin below a lower bound pyproject.toml promises."""
    locked = _locked()
    assert {"pip", "setuptools"} <= set(locked)
    for name, bound in _requirements():
        assert name in locked, f"{name} is a dependency but constraints.txt does not pin it"
        if bound is not None:
            assert _version(locked[name]) >= _version(bound), f"{name}: locked {locked[name]} is below the lower bound {bound}"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())
