"""A model folder split over packages: found through real installed distributions (a small
zip split into three, each piece in a distribution of its own on ``sys.path``), reassembled
once into the cache, checked, and rebuilt when damaged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from filelock import FileLock

from paretoml.objectives.tasks.base import MissingExtraError
from paretoml.objectives.tasks.model_parts import (
    MANIFEST,
    SplitZip,
    assembled_folder,
    cache_folder,
    lock_path,
    piece_paths,
)

FILES = {
    "config.json": b'{"model_type": "toy"}',
    "model.bin": os.urandom(200_000),
    "sub/extra.json": b"{}",
}
HINT = "pip install toy-parts"


def install_split_zip(site: Path, name: str, n: int = 3) -> SplitZip:
    """Write a zip of ``name/`` (stored, so damage shows as a CRC error), split into ``n``
    pieces, each installed as the distribution ``{name}-part-00i`` in ``site``."""
    archive = site / "whole.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for rel, data in FILES.items():
            zf.writestr(f"{name}/{rel}", data)
    data = archive.read_bytes()
    archive.unlink()
    step = -(-len(data) // n)
    dists = []
    for i in range(1, n + 1):
        package = f"{name}_part_{i:03d}"
        piece = site / package / "input" / f"{name}.zip.{i:03d}"
        piece.parent.mkdir(parents=True)
        piece.write_bytes(data[(i - 1) * step : i * step])
        info = site / f"{package}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-part-{i:03d}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{package}/input/{name}.zip.{i:03d},,\n{package}-0.0.1.dist-info/METADATA,,\n")
        dists.append(f"{name}-part-{i:03d}")
    return SplitZip(name=name, distributions=tuple(dists), folder=name, install_hint=HINT)


@pytest.fixture
def toy(tmp_path, monkeypatch) -> SplitZip:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PARETOML_CACHE_DIR", str(tmp_path / "cache"))
    return install_split_zip(site, "toy")


def test_pieces_found_through_the_installed_distributions(toy, tmp_path):
    paths = piece_paths(toy)
    assert [p.name for p in paths] == ["toy.zip.001", "toy.zip.002", "toy.zip.003"]
    assert all(p.is_relative_to(tmp_path / "site") for p in paths)


def test_reassembled_once_then_reused(toy, tmp_path, caplog):
    caplog.set_level("INFO", logger="paretoml.objectives.tasks.model_parts")
    folder = assembled_folder(toy)
    assert folder.parent == tmp_path / "cache" / "models"
    for rel, data in FILES.items():
        assert (folder / rel).read_bytes() == data
    assert json.loads((folder / MANIFEST).read_text()) == {rel: len(data) for rel, data in FILES.items()}
    inode = (folder / "model.bin").stat().st_ino
    assert assembled_folder(toy) == folder
    assert (folder / "model.bin").stat().st_ino == inode
    assert sum("reassembling toy" in r.message for r in caplog.records) == 1
    # nothing but the folder and its lock is left in the cache (the zip and temp dirs are gone)
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name, folder.name + ".lock"]


def test_a_folder_damaged_later_is_rebuilt(toy):
    folder = assembled_folder(toy)
    (folder / "model.bin").write_bytes(b"truncated")
    assert assembled_folder(toy) == folder
    assert (folder / "model.bin").read_bytes() == FILES["model.bin"]


def test_a_damaged_piece_is_refused_and_leaves_no_folder(toy):
    second = piece_paths(toy)[1]
    data = bytearray(second.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside model.bin's stored bytes
    second.write_bytes(bytes(data))
    with pytest.raises(zipfile.BadZipFile, match="CRC"):
        assembled_folder(toy)
    models = Path(os.environ["PARETOML_CACHE_DIR"]) / "models"
    assert [p.name for p in models.iterdir() if not p.name.endswith(".lock")] == []


def test_missing_package_says_what_to_install(toy):
    missing = SplitZip(name="toy", distributions=(*toy.distributions, "toy-part-404"), folder="toy",
                       install_hint=HINT)
    with pytest.raises(MissingExtraError, match="toy-part-404.*pip install toy-parts"):
        assembled_folder(missing)


def test_processes_loading_at_once_build_it_once(toy, tmp_path):
    """Three processes are held at the lock until all of them are ready, then race for it."""
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
        "from paretoml.objectives.tasks.model_parts import SplitZip, assembled_folder\n"
        f"model = SplitZip(name='toy', distributions={toy.distributions!r}, folder='toy', install_hint='')\n"
        "print('READY', flush=True)\n"
        "print('FOLDER', assembled_folder(model))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), *sys.path])}
    final = cache_folder(toy)
    final.parent.mkdir(parents=True)
    with FileLock(lock_path(final)):
        procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
        assert [p.stdout.readline().strip() for p in procs] == ["READY"] * 3  # type: ignore[union-attr]
        time.sleep(0.5)  # each is now blocked on the lock this test holds
        assert not final.exists()
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    folders = {line.split(" ", 1)[1] for out, _ in outputs for line in out.splitlines() if line.startswith("FOLDER")}
    assert folders == {str(final)}
    assert sum("reassembling toy" in out for out, _ in outputs) == 1
    assert (final / "model.bin").read_bytes() == FILES["model.bin"]
