"""The README's "Compress your own model" examples run as written: the Python API script,
and the entry-point route (the task module, its entry point, a spec and the CLI)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def section_blocks(title: str) -> dict[str, str]:
    """Fenced blocks of a README section, keyed by the file name of their first-line comment."""
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.index("\n## ", start + 1)
    blocks: dict[str, str] = {}
    for language, body in re.findall(r"```(\w+)\n(.*?)```", text[start:end], flags=re.S):
        first = body.splitlines()[0]
        name = re.match(r"#\s*([\w.]+)", first)
        blocks[name.group(1) if name else language] = body
    return blocks


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)


def test_python_api_example_runs(tmp_path):
    blocks = section_blocks("Compress your own model")
    (tmp_path / "own_model.py").write_text(blocks["own_model.py"])
    done = run([sys.executable, "own_model.py"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    fronts = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert fronts, done.stdout
    assert (tmp_path / "own.db").exists()


def test_entry_point_example_runs(tmp_path):
    blocks = section_blocks("Compress your own model")
    (tmp_path / "my_tasks.py").write_text(blocks["my_tasks.py"])
    (tmp_path / "tiny.yaml").write_text(blocks["tiny.yaml"])
    project = tomllib.loads(blocks["pyproject.toml"])["project"]
    # what `pip install` of that pyproject writes: a dist-info with the entry points
    dist = tmp_path / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = [f"{name} = {target}" for name, target in project["entry-points"]["paretoml.tasks"].items()]
    (dist / "entry_points.txt").write_text("[paretoml.tasks]\n" + "\n".join(lines) + "\n")
    commands = [line.split("#")[0].split() for line in blocks["bash"].splitlines() if line.startswith("paretoml")]
    assert [c[:2] for c in commands] == [["paretoml", "tasks"], ["paretoml", "run"]]
    listed = run([str(BIN / "paretoml"), "tasks"], tmp_path, PYTHONPATH=str(tmp_path))
    assert listed.returncode == 0 and "tiny-encoder" in listed.stdout, listed.stderr[-2000:]
    ran = run([str(BIN / "paretoml"), *commands[1][1:], "--storage", f"sqlite:///{tmp_path / 'tiny.db'}"],
              tmp_path, PYTHONPATH=str(tmp_path))
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "cosine" in ran.stdout
