"""`pip install -e .` and the wheel build print no warning: every folder that ships is a
declared package, and the metadata uses no deprecated form (e.g. a `project.license` table).

Both run as `make setup` does, with pip's isolated build environment (so with the setuptools
that `build-system.requires` picks, not the one of this venv), verbose, so that everything
setuptools says is in the output."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# a warning, a deprecation notice, or setuptools' boxed "Package would be ignored" notice
NOISE = re.compile(r"warn|deprecat|would be ignored", re.IGNORECASE)
# anything shown by Python's warnings module (`file.py:12: Category: message`), except the
# notice setuptools itself classes as no warning ("InformationOnly: Editable installation.")
PYTHON_WARNING = re.compile(r"\.py:\d+: (?!InformationOnly:)\w+: ")
# that same notice as pip 26 relays it from the build backend: information, not a warning
EDITABLE_NOTICE = re.compile(r"\.py:\d+: (InformationOnly|BuildBackendWarning): Editable installation\.$")
# the verbose build lists every file it copies; a file's name is not a warning
FILE_LISTING = re.compile(r"^\s*(copying|adding|creating|writing|reading) ")


def _source_copy(tmp_path: Path) -> Path:
    """The project as a fresh clone has it (setuptools writes build/ and egg-info into the tree)."""
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".whl", ".gl", "build", "dist", "*.egg-info", "__pycache__", "*.db", "tests"))
    return source


def _pip(*args: str, cwd: Path) -> str:
    """pip's output, with the temporary folder's name (this test's name) left out."""
    env = dict(os.environ)
    # set on some machines; it makes distutils say "warning: byte-compiling is disabled"
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    return output.replace(str(cwd), "<tmp>")


def _noise(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines()
            if (NOISE.search(line) or PYTHON_WARNING.search(line))
            and not FILE_LISTING.match(line) and not EDITABLE_NOTICE.search(line.strip())]


@pytest.mark.parametrize("how", ["editable install", "wheel build"])
def test_install_is_silent(tmp_path, how):
    source = _source_copy(tmp_path)
    if how == "editable install":
        output = _pip("install", "-v", "--no-deps", "--target", str(tmp_path / "site"), "-e", str(source),
                      cwd=tmp_path)
        assert "Successfully installed paretoml" in output
    else:
        output = _pip("wheel", "-v", "--no-deps", "-w", str(tmp_path / "dist"), str(source), cwd=tmp_path)
        assert list((tmp_path / "dist").glob("paretoml-*.whl"))
    assert "setuptools" in output  # the build backend's own output is there to be read
    assert not _noise(output), "\n".join(_noise(output))


def test_the_check_sees_setuptools_warnings():
    """What the old pyproject printed is caught (a check that reads nothing would pass too)."""
    old = """
  /tmp/pip-build-env-x/overlay/lib/python3.11/site-packages/setuptools/command/build_py.py:215: _Warning: Package 'paretoml.dashboard.static' is absent from the `packages` configuration.
  /tmp/pip-build-env-x/overlay/.../_apply_pyprojecttoml.py:82: SetuptoolsDeprecationWarning: `project.license` as a TOML table is deprecated
  /tmp/pip-build-env-x/overlay/.../editable_wheel.py:354: InformationOnly: Editable installation.
  /tmp/pip-build-env-x/overlay/.../editable_wheel.py:354: BuildBackendWarning: Editable installation.
  /tmp/pip-build-env-x/overlay/.../build_py.py:215: BuildBackendWarning: Package 'paretoml.x' is absent from the `packages` configuration.
  /tmp/pip-build-env-x/overlay/.../dist.py:9: FutureNotice: ...
  copying build/lib/paretoml/service/api/warnings.py -> build/bdist.linux-x86_64/wheel/./paretoml/service/api
"""
    assert [line.split(": ")[1] for line in _noise(old)] == ["_Warning", "SetuptoolsDeprecationWarning",
                                                             "BuildBackendWarning", "FutureNotice"]
