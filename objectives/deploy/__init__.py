"""Deployable compression: real low-bit and sparse kernels per device, export and reload.

:func:`deployable` turns a trial's compressed model into the model a user would ship
(each layer in a real kernel, see :mod:`.formats`); :func:`export_compressed` writes it as
a safetensors file plus a manifest, and :func:`load_compressed` rebuilds it.
"""

from paretoml.objectives.deploy.convert import (
    Deployment,
    LayerPlan,
    NoKernelError,
    deployable,
    kernel_choices,
    kernel_summary,
    plan_layers,
    prune_multiples,
    resident_bytes,
)
from paretoml.objectives.deploy.export import (
    Manifest,
    export_compressed,
    load_compressed,
    file_weight_bytes,
    load_deployment,
    read_manifest,
    trial_layer_bytes,
    trial_model_bytes,
)
from paretoml.objectives.deploy.formats import LayerFormat, kernels_on
from paretoml.objectives.deploy.sparse import prune_semi_structured, semi_structured_layers

__all__ = ["Deployment", "LayerFormat", "LayerPlan", "Manifest", "NoKernelError", "deployable", "export_compressed",
           "file_weight_bytes", "kernel_choices", "kernel_summary", "kernels_on", "load_compressed",
           "load_deployment", "plan_layers", "prune_multiples", "prune_semi_structured", "read_manifest",
           "resident_bytes", "semi_structured_layers", "trial_layer_bytes", "trial_model_bytes"]
