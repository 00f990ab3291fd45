"""How a trial's model is deployed, named once: which bytes ``model_bytes`` counts and which
model latency and memory are measured on (issue 24: one trial, one deployment).

* ``runtime`` (default): every layer runs in a kernel of its own format on the study's
  device; formats with no kernel for a layer's shape there are not offered. ``model_bytes``
  is the deployed model's resident parameter and buffer bytes; latency and peak memory are
  measured on that model.
* ``dequantize-at-load``: the weights are shipped packed and expanded to the device's float
  type when loaded. ``model_bytes`` is the exported file's weight bytes; latency and memory
  are the expanded float model's, measured.
* ``emulate: true`` (runtime only) keeps formats without a kernel: such a layer runs in the
  narrowest kernel that holds its values, its bytes are that kernel's, and the trial's
  latency is ``estimated``.

Ground floor: the spec (service), the evaluator and the export (objectives) all read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["DEFAULT_DEPLOY", "DEPLOY_MODES", "DEQUANTIZE_AT_LOAD", "RUNTIME", "DeployMode", "DeployModeName"]

DeployModeName = Literal["runtime", "dequantize-at-load"]
DEPLOY_MODES: tuple[str, ...] = get_args(DeployModeName)
RUNTIME: DeployModeName = "runtime"
DEQUANTIZE_AT_LOAD: DeployModeName = "dequantize-at-load"


@dataclass(frozen=True)
class DeployMode:
    """One study's deployment.

    Args:
        mode: ``runtime`` or ``dequantize-at-load`` (see the module docstring).
        emulate: in ``runtime`` mode, keep formats that have no kernel on the device (they run
            in the narrowest kernel holding their values; latency ``estimated``).
    """

    mode: DeployModeName = RUNTIME
    emulate: bool = False

    def __post_init__(self) -> None:
        if self.mode not in DEPLOY_MODES:
            raise ValueError(f"deploy.mode must be one of {', '.join(DEPLOY_MODES)}, got {self.mode!r}")
        if self.emulate and self.mode != RUNTIME:
            raise ValueError("deploy.emulate applies to mode runtime only (dequantize-at-load runs float kernels)")

    @property
    def strict(self) -> bool:
        """Every layer must run a kernel of its own format (formats without one are dropped)."""
        return self.mode == RUNTIME and not self.emulate

    @property
    def label(self) -> str:
        return f"{self.mode}{' (emulate)' if self.emulate else ''}"


DEFAULT_DEPLOY = DeployMode()
