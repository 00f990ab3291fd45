"""The top-level ``paretoml`` module: lazy ``search`` / ``load_compressed``, and a layout that
works editable, from the repository root and from a wheel."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import paretoml

ROOT = Path(__file__).resolve().parents[2]


def test_search_is_the_python_api_and_subpackages_still_import():
    from paretoml.service.own_model import search

    assert paretoml.search is search
    assert Path(paretoml.__file__).parent.name == "python_api"
    assert importlib.import_module("paretoml.search_space.space").__file__.startswith(str(ROOT))


def test_load_compressed_is_lazy_and_its_absence_is_a_clear_import_error():
    try:
        importlib.import_module("paretoml.objectives.deploy")
    except ModuleNotFoundError:
        with pytest.raises(ImportError, match="paretoml.load_compressed needs paretoml.objectives.deploy"):
            paretoml.load_compressed  # noqa: B018
    else:
        assert callable(paretoml.load_compressed)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        paretoml.nothing  # noqa: B018


@pytest.mark.slow
def test_wheel_installs_a_real_toplevel_package(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".whl", "build", "*.egg-info", "__pycache__", "*.db", "tests"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(source)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("paretoml-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"paretoml/__init__.py", "paretoml/objectives/tasks/data/sentences.txt",
            "paretoml/objectives/tasks/minilm.py"} <= names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = ("import paretoml, paretoml.objectives.tasks.minilm as m; "
            "print(paretoml.__file__); print(paretoml.search.__module__); print(len(m.load_sentences()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                          env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    first, module, sentences = done.stdout.split()
    assert first == str(target / "paretoml" / "__init__.py")
    assert module == "paretoml.service.own_model" and int(sentences) == 2000
