"""Issue 14, defect 9: `pip install .` gives a working package: its dependencies are declared (lower bounds only;
requirements.txt keeps the exact pins) and a `codixr-studio` command starts the app like `python app.py`."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST_ONLY = {"pytest", "playwright"}  # requirements.txt's test tools: the `test` extra, not the package's needs


def _name(requirement: str) -> str:
    """The normalised project name of a requirement string (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)).lower()


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _requirements() -> set[str]:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return {_name(line) for line in lines if line.strip() and not line.lstrip().startswith("#")}


def test_pyproject_declares_every_runtime_requirement_without_pinning():
    project = _project()
    declared = {_name(d) for d in project.get("dependencies", [])}
    assert _requirements() - TEST_ONLY <= declared, f"missing: {sorted(_requirements() - TEST_ONLY - declared)}"
    assert not declared & TEST_ONLY
    assert {_name(d) for d in project["optional-dependencies"]["test"]} == TEST_ONLY
    assert not [d for d in project["dependencies"] if "==" in d or "<" in d], "pins belong in requirements.txt"


def test_codixr_studio_command_is_the_apps_main():
    target = _project()["scripts"]["codixr-studio"]
    module, function = target.split(":")
    from codixr.app import main

    assert getattr(importlib.import_module(module), function) is main and callable(main)


def test_an_offline_install_has_the_command_and_the_dependencies(tmp_path):
    """Build and install the package from a copy of its sources, offline and without dependencies."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "codixr", source / "codixr", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--disable-pip-version-check", "--target", str(target), str(source)],
                   check=True, capture_output=True, text=True, timeout=300)
    assert (target / "bin" / "codixr-studio").is_file()
    assert (target / "codixr" / "app" / "batching.py").is_file()
    info = next(target.glob("codixr-*.dist-info"))
    assert "codixr-studio = codixr.app:main" in (info / "entry_points.txt").read_text()
    requires = {_name(line.split(":", 1)[1]) for line in (info / "METADATA").read_text().splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line}
    assert _requirements() - TEST_ONLY <= requires
    script = target / "bin" / "codixr-studio"
    assert "from codixr.app import main" in script.read_text()
    shown = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120,
                           env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: codixr-studio"), shown.stderr[-2000:]
    assert "--session-cap" in shown.stdout
