"""What a wheel install of the dashboard needs is inside the wheel, and its modules import
on their own (a user of ``paretoml.dashboard`` need not import the app first)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dashboard_routes_import_without_the_app_first():
    done = subprocess.run([sys.executable, "-c", "import paretoml.dashboard.routes"],
                          capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr


def test_wheel_ships_templates_static_files_and_example_specs(tmp_path):
    # built from a copy: setuptools writes build/ and egg-info into the source tree
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".whl", "build", "*.egg-info", "__pycache__", "*.db", "tests"))
    # isolated: built with the setuptools that pyproject.toml asks for (>=77 for the SPDX license)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(tmp_path), str(source)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("paretoml-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    examples = {f"paretoml/studies/{p.name}" for p in (ROOT / "studies").glob("*.yaml")}
    assert examples and examples <= names
    assert {"paretoml/dashboard/templates/study.html", "paretoml/dashboard/static/study.js"} <= names
    assert not any(n.startswith("paretoml/tests/") for n in names)
