"""Deployable compression: real low-bit and sparse kernels per device, export and reload.

:func:`deployable` turns a trial's compressed model into the model a user would ship
(each layer in a real kernel, see :mod:`.formats`); :func:`export_compressed` writes it as
a safetensors file plus a manifest, and :func:`load_compressed` rebuilds it.
"""

from paretoml.objectives.deploy.convert import Deployment, LayerPlan, deployable, kernel_summary, plan_layers
from paretoml.objectives.deploy.export import (
    Manifest,
    export_compressed,
    load_compressed,
    load_deployment,
    read_manifest,
)
from paretoml.objectives.deploy.formats import LayerFormat, kernels_on
from paretoml.objectives.deploy.sparse import prune_semi_structured, semi_structured_layers

__all__ = ["Deployment", "LayerFormat", "LayerPlan", "Manifest", "deployable", "export_compressed",
           "kernel_summary", "kernels_on", "load_compressed", "load_deployment", "plan_layers",
           "prune_semi_structured", "read_manifest", "semi_structured_layers"]
