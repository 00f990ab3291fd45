"""A checked on-disk cache of trained weights, so tasks train once per machine.

Each entry is a ``.pt`` state dict with a ``.json`` sidecar holding its SHA-256 and the
metadata it was trained with. An entry whose hash or metadata does not match is retrained,
never trusted. Writes are atomic (temporary file, then rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

StateDict = dict[str, torch.Tensor]


def cache_dir() -> Path:
    root = os.environ.get("PARETOML_CACHE_DIR") or Path.home() / ".cache" / "paretoml"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_cached(key: str, metadata: dict[str, Any]) -> StateDict | None:
    """The cached state dict for ``key`` if its hash and metadata check out, else None."""
    weights, sidecar = cache_dir() / f"{key}.pt", cache_dir() / f"{key}.json"
    try:
        recorded = json.loads(sidecar.read_text())
        if recorded.get("metadata") != metadata or recorded.get("sha256") != _sha256(weights):
            return None
        return torch.load(weights, map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError, EOFError):
        return None


def store(key: str, metadata: dict[str, Any], state: StateDict) -> None:
    weights, sidecar = cache_dir() / f"{key}.pt", cache_dir() / f"{key}.json"
    _atomic_write(weights, lambda p: torch.save(state, p))
    record = {"metadata": metadata, "sha256": _sha256(weights)}
    _atomic_write(sidecar, lambda p: p.write_text(json.dumps(record, indent=2)))


def cached_or_trained(key: str, metadata: dict[str, Any], train: Callable[[], StateDict]) -> StateDict:
    state = load_cached(key, metadata)
    if state is None:
        state = {k: v.detach().cpu().clone() for k, v in train().items()}
        store(key, metadata, state)
    return state
