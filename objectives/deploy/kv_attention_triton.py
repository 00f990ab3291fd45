"""Decode attention over the packed KV cache of :mod:`.kv_cache`, in Triton (placeholder)."""

from __future__ import annotations

import importlib.util


def available() -> bool:
    return importlib.util.find_spec("triton") is not None and False
