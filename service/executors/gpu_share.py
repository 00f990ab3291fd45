"""How many GPUs each Ray worker reserves, so that several workers share one GPU well.

A worker holds its model once and runs one trial at a time; a trial alternates between
Python (compressing, packing kernels) and the GPU (scoring), so one worker leaves the GPU
idle much of the time. Several workers on one GPU fill those gaps. Ray places workers by
their fractional ``num_gpus``: a fraction ``1/k`` packs ``k`` workers on each GPU, and Ray
points each worker's ``CUDA_VISIBLE_DEVICES`` at its own GPU.

``auto`` (the default) spreads ``workers`` evenly over the GPUs the cluster has when the
study measures on CUDA: ``1/ceil(workers/gpus)`` each, or one whole GPU each when there are
GPUs to spare. Pools that run at once (a server's ``study_concurrency``) split the GPUs
between them (``sharers``): each pool sizing itself for the whole cluster would leave all
but one waiting for GPUs the first holds until it ends. Asking for more than fits is an
error before anything starts, not a pool waiting forever for a GPU that never frees up.
"""

from __future__ import annotations

import math
from typing import Literal

GpuRequest = float | Literal["auto"]


class GpuShareError(ValueError):
    """The workers' GPU reservations cannot all be placed on the cluster."""


def workers_per_gpu(share: float) -> int:
    """Workers Ray places on one GPU when each reserves ``share`` (< 1) of one."""
    return math.floor(1 / share + 1e-9)


def capacity(share: float, gpus: float) -> int:
    """Workers of ``share`` GPUs each that fit on ``gpus`` whole GPUs."""
    if share <= 0:
        raise ValueError("share must be positive")
    whole = math.floor(gpus + 1e-9)
    if share < 1:
        return whole * workers_per_gpu(share)
    return math.floor(whole / math.ceil(share - 1e-9) + 1e-9)


def gpu_share(workers: int, requested: GpuRequest, cluster_gpus: float, uses_cuda: bool, sharers: int = 1) -> float:
    """The ``num_gpus`` each of ``workers`` reserves.

    ``requested`` is a number (0 reserves none: CPU workers) or ``"auto"``; ``uses_cuda``
    says whether the study measures on a GPU (its ``measure.device``); ``sharers`` is the
    number of pools of this size that run on the cluster at once."""
    if workers < 1 or sharers < 1:
        raise ValueError("workers and sharers must be at least 1")
    if requested == "auto":
        if not uses_cuda:
            return 0.0
        if cluster_gpus < 1:
            raise GpuShareError("the study measures on 'cuda' but the Ray cluster has no GPU")
        per_gpu = math.ceil(workers * sharers / math.floor(cluster_gpus + 1e-9))
        return 1.0 / per_gpu
    share = float(requested)
    if share < 0:
        raise GpuShareError(f"worker GPUs must be >= 0 or 'auto', not {requested!r}")
    if share == 0:
        if uses_cuda:
            raise GpuShareError("the study measures on 'cuda' but its workers reserve no GPU "
                                "(worker GPUs 0): Ray would hide the GPUs from them; use 'auto' or a fraction")
        return 0.0
    if share > 1 and not float(share).is_integer():
        raise GpuShareError(f"a worker can reserve a fraction of one GPU or whole GPUs, not {share}")
    fits = capacity(share, cluster_gpus)
    if workers * sharers > fits:
        together = f" ({sharers} pools of {workers} at once)" if sharers > 1 else ""
        raise GpuShareError(
            f"{workers * sharers} workers{together} reserving {share:g} GPU each do not fit on the cluster's "
            f"{cluster_gpus:g} GPU(s): at most {fits}; use fewer workers, a smaller share, or 'auto'")
    return share


def parse_gpu_request(text: str) -> GpuRequest:
    """``auto`` or a number of GPUs (CLI and settings)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected 'auto' or a number of GPUs, not {text!r}") from None
    if value < 0 or not math.isfinite(value):
        raise ValueError(f"GPUs per worker must be 'auto' or a number >= 0, not {text!r}")
    return value
