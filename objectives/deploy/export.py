"""Export a compressed model as a file, and rebuild its deployable form from that file.

A directory holds ``model.safetensors`` and ``manifest.json``. Export is the timed model,
so what the file holds follows the study's deployment mode
(:mod:`paretoml.search_space.deploy_mode`), and ``model_bytes`` is, byte for byte, the
file's tensors (its size less the safetensors header):

* ``runtime`` (format 2, storage ``deployed``): the deployed model's own parameters and
  buffers, each kernel's packed weights and scales as they sat on the device when the
  trial was timed; loading on the same device restores those very kernels, no re-packing.
* ``dequantize-at-load`` (and format 1): each knob layer's weight packed, b-bit integers
  bit-packed (``.q``) with fp16 row scales (``.scale``), or, where cheaper, a bitmap of
  the non-zeros (``.mask``) and only their values; 16-bit weights as fp16; everything else
  the state dict as it is. Loading expands it (format 1: re-plans kernels, emulating).

The manifest (a pydantic model, validated on load) says what each layer is and which
kernel ran it, with the trial's objectives and their provenance.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from torch import nn

from paretoml.objectives.deploy import kv_model
from paretoml.objectives.deploy.convert import (
    AS_IS,
    Deployment,
    LayerPlan,
    set_module,
    deployable,
    layer_format,
    plan_layers,
)
from paretoml.objectives.deploy.deployed_model import DeployedModel
from paretoml.objectives.deploy.formats import LayerFormat
from paretoml.objectives.deploy.kernels import compute_dtype
from paretoml.objectives.deploy.layer_kernels import restore_layer
from paretoml.objectives.deploy.pack import pack_bits, pack_mask, to_int_weight, unpack_bits, unpack_mask
from paretoml.search_space.deploy_mode import DEFAULT_DEPLOY, DEQUANTIZE_AT_LOAD, RUNTIME, DeployMode, DeployModeName
from paretoml.search_space.introspect import layer_weight, weight_key
from paretoml.search_space.space import TrialConfig

MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
#: 2: the deployment mode, and runtime exports holding the deployed model's own tensors
FORMAT_VERSION = 2
#: a layer stored as its kernel's own buffers (runtime exports)
DEPLOYED = "deployed"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LayerEntry(_Strict):
    name: str
    kind: str
    shape: list[int]
    weight_bits: int
    act_bits: int | None = None
    pattern: str = "dense"
    storage: str = Field(description="packed | bitmap | float16 | float16-bitmap | float32 | deployed")
    nnz: int = Field(ge=0)
    kernel: str = Field(description="kernel that ran the layer when the trial was measured on export_device")
    own_kernel: str | None = None


class Manifest(_Strict):
    format_version: int = FORMAT_VERSION
    paretoml_version: str
    torch_version: str
    task: str
    task_options: dict[str, Any] = Field(default_factory=dict)
    study: str | None = None
    trial: int | None = None
    config: dict[str, Any]
    layers: list[LayerEntry]
    objectives: dict[str, float] = Field(default_factory=dict)
    provenance: dict[str, dict[str, str]] = Field(default_factory=dict)
    export_device: str = "cpu"
    weights_file: str = WEIGHTS
    #: KV-cache format of each decoder layer (``K8V4``; K16V16 unquantised), a causal LM's only
    kv_formats: list[str] = Field(default_factory=list)
    #: the study's deployment (format 2); None in format 1 files
    deploy_mode: DeployModeName | None = None
    emulate: bool = False

    def deploy(self) -> DeployMode:
        """How the file is loaded: format 1 re-plans its kernels, running each layer in the
        narrowest kernel that holds its values (emulation: it never fails for a format)."""
        if self.deploy_mode is None:
            return DeployMode(RUNTIME, emulate=True)
        return DeployMode(self.deploy_mode, self.emulate)


def _version() -> str:
    try:
        return metadata.version("paretoml")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        return "0+unknown"


def _pack_weight(name: str, weight: torch.Tensor, bits: int) -> tuple[dict[str, torch.Tensor], str, int]:
    """The tensors storing one knob layer's weight, its storage kind and non-zero count."""
    w = weight.detach().to(device="cpu", dtype=torch.float32)
    numel = w.numel()
    mask = w != 0
    nnz = int(mask.sum())
    bitmap_cheaper = numel + bits * nnz < bits * numel
    out: dict[str, torch.Tensor] = {}
    if bits == 16:
        values = w.flatten()[mask.flatten()] if bitmap_cheaper else w
        out[f"{name}.f16"] = values.to(torch.float16).contiguous()
        if bitmap_cheaper:
            out[f"{name}.mask"] = pack_mask(mask)
        return out, "float16-bitmap" if bitmap_cheaper else "float16", nnz
    iw = to_int_weight(w, bits)
    q = iw.q.flatten()[mask.flatten()] if bitmap_cheaper else iw.q
    out[f"{name}.q"] = pack_bits(q, bits)
    out[f"{name}.scale"] = iw.scale.contiguous()
    if bitmap_cheaper:
        out[f"{name}.mask"] = pack_mask(mask)
    return out, "bitmap" if bitmap_cheaper else "packed", nnz


def _unpack_weight(name: str, entry: LayerEntry, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    shape = entry.shape
    numel = 1
    for d in shape:
        numel *= d
    sparse = entry.storage in ("bitmap", "float16-bitmap")
    mask = unpack_mask(tensors[f"{name}.mask"], numel) if sparse else None
    if entry.storage.startswith("float16"):
        values = tensors[f"{name}.f16"].to(torch.float32).flatten()
    else:
        count = entry.nnz if sparse else numel
        q = unpack_bits(tensors[f"{name}.q"], entry.weight_bits, count).to(torch.float32)
        rows = shape[0]
        scale = tensors[f"{name}.scale"].to(torch.float32)
        if sparse:
            row_of = torch.nonzero(mask).flatten() // (numel // rows)  # type: ignore[arg-type]
            values = q * scale[row_of]
        else:
            values = (q.reshape(rows, -1) * scale[:, None]).flatten()
    if mask is None:
        return values.reshape(shape)
    full = torch.zeros(numel, dtype=torch.float32)
    full[mask] = values
    return full.reshape(shape)


def _packed_tensors(model: nn.Module, config: TrialConfig, plans: list[LayerPlan]
                    ) -> tuple[dict[str, torch.Tensor], list[LayerEntry]]:
    """The dequantize-at-load file: knob weights packed, the rest of the state dict as it is."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors: dict[str, torch.Tensor] = {}
    entries: list[LayerEntry] = []
    for plan in plans:
        weight = layer_weight(model, plan.name)
        key = weight_key(plan.name, plan.format.kind)
        fmt = layer_format(plan.name, plan.format.kind, config)
        if fmt.weight_bits < 32:
            packed, storage, nnz = _pack_weight(key, weight, fmt.weight_bits)
            tensors.update(packed)
            state.pop(key)
        else:
            storage, nnz = "float32", int(torch.count_nonzero(weight))
        entries.append(_entry(plan, storage, nnz))
    tensors.update(state)
    return tensors, entries


def _entry(plan: LayerPlan, storage: str, nnz: int) -> LayerEntry:
    fmt = plan.format
    return LayerEntry(name=plan.name, kind=fmt.kind, shape=list(plan.shape), weight_bits=fmt.weight_bits,
                      act_bits=fmt.act_bits, pattern=fmt.pattern, storage=storage, nnz=nnz,
                      kernel=plan.kernel, own_kernel=plan.own_kernel)


def _unwrapped(model: nn.Module) -> nn.Module:
    return model.inner if isinstance(model, DeployedModel) else model


def deployed_tensors(deployment: Deployment) -> dict[str, torch.Tensor]:
    """The deployed model's parameters and buffers as a runtime export writes them (on the
    CPU, in the dtypes and layouts that ran): their bytes are the trial's ``model_bytes``."""
    return {k: v.detach().cpu().contiguous() for k, v in _unwrapped(deployment.model).state_dict().items()}


def _nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _file_tensors(model: nn.Module, config: TrialConfig, device: torch.device) -> dict[str, torch.Tensor]:
    plans = plan_layers(model, config, device, deploy=DeployMode(DEQUANTIZE_AT_LOAD))
    return _packed_tensors(model, config, plans)[0]


def file_weight_bytes(model: nn.Module, config: TrialConfig, device: torch.device | str = "cpu") -> int:
    """Bytes of the tensors a dequantize-at-load export of ``model`` writes (its file less
    the header): that mode's ``model_bytes``."""
    return _nbytes(_file_tensors(model, config, torch.device(device)))


def _trial_tensors(deployment: Deployment, model: nn.Module, config: TrialConfig) -> dict[str, torch.Tensor]:
    if deployment.deploy.mode == DEQUANTIZE_AT_LOAD:
        return _file_tensors(model, config, deployment.device)
    return deployed_tensors(deployment)


def trial_model_bytes(deployment: Deployment, model: nn.Module, config: TrialConfig) -> int:
    """A trial's ``model_bytes`` under its deployment: the deployed model's resident bytes
    (runtime, emulated or not), or the packed file's weight bytes (dequantize-at-load).
    Either way, what its export's file holds."""
    return _nbytes(_trial_tensors(deployment, model, config))


def trial_layer_bytes(deployment: Deployment, model: nn.Module, config: TrialConfig,
                      layers: Iterable[str]) -> dict[str, int]:
    """Each of ``layers``' share of :func:`trial_model_bytes`: the tensors under its name (its
    kernel's packed weight, scales and bias). Layers own their tensors, so the shares add up:
    what lets the sensitivity allocator price a whole model from single layers exactly."""
    tensors = _trial_tensors(deployment, model, config)
    return {layer: _nbytes({k: t for k, t in tensors.items() if k == layer or k.startswith(f"{layer}.")})
            for layer in layers}


@torch.no_grad()
def export_compressed(model: nn.Module, config: TrialConfig, out_dir: str | Path, *, task: str,
                      task_options: dict[str, Any] | None = None, device: torch.device | str = "cpu",
                      objectives: dict[str, float] | None = None,
                      provenance: dict[str, dict[str, str]] | None = None,
                      study: str | None = None, trial: int | None = None,
                      deploy: DeployMode = DEFAULT_DEPLOY, kernels: dict[str, str] | None = None) -> Manifest:
    """Write ``model`` (the trial's compressed model: quantized values, pruned zeros) to
    ``out_dir`` as ``deploy`` deploys it on ``device``; ``kernels`` (layer -> kernel, as the
    trial recorded) pins the kernel table's choice where a format has several."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    if deploy.mode == DEQUANTIZE_AT_LOAD:
        tensors, entries = _packed_tensors(model, config, plan_layers(model, config, device, deploy=deploy))
    else:
        deployment = deployable(model, config, device, deploy=deploy, kernels=kernels)
        tensors = deployed_tensors(deployment)
        nonzeros = {p.name: int(torch.count_nonzero(layer_weight(model, p.name))) for p in deployment.layers}
        entries = [_entry(p, DEPLOYED if p.kernel not in AS_IS else "float32", nonzeros[p.name])
                   for p in deployment.layers]
    manifest = Manifest(
        paretoml_version=_version(), torch_version=torch.__version__, task=task, task_options=task_options or {},
        study=study, trial=trial, config=config.to_dict(), layers=entries, objectives=objectives or {},
        provenance=provenance or {}, export_device=str(device),
        kv_formats=[f.label for f in kv_model.formats_of(model) or []],
        deploy_mode=deploy.mode, emulate=deploy.emulate,
    )
    save_file(tensors, str(out / WEIGHTS), metadata={"paretoml_format": str(FORMAT_VERSION)})
    (out / MANIFEST).write_text(manifest.model_dump_json(indent=2))
    return manifest


@contextmanager
def export_folder(source: str | Path) -> Iterator[Path]:
    """The folder of an export: ``source`` itself, or, for the zip that REST and the dashboard
    download (one folder ``STUDY-trialN/`` inside), that zip unpacked into a temporary folder."""
    path = Path(source)
    if path.is_dir():
        yield path
        return
    if not path.is_file():
        raise FileNotFoundError(f"no export at {path}: give the folder `paretoml export` wrote or the downloaded zip")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is neither an export folder nor a zip archive of one")
    with tempfile.TemporaryDirectory(prefix="paretoml-export-") as tmp, zipfile.ZipFile(path) as archive:
        archive.extractall(tmp)  # extractall keeps every member inside tmp ("..", absolute names)
        found = sorted(p.parent for p in Path(tmp).rglob(MANIFEST))
        if len(found) != 1:
            raise ValueError(f"{path} holds {len(found)} {MANIFEST} files, not one: it is not an export archive")
        yield found[0]


def read_manifest(directory: str | Path) -> Manifest:
    with export_folder(directory) as folder:
        return Manifest.model_validate_json((folder / MANIFEST).read_text())


def compressed_state(directory: str | Path) -> tuple[Manifest, dict[str, torch.Tensor]]:
    """The manifest and the full fp32 state dict (quantized values, as the trial held them)
    of an export folder or its zip."""
    with export_folder(directory) as folder:
        manifest = read_manifest(folder)
        tensors = load_file(str(folder / manifest.weights_file))
    state = {k: v for k, v in tensors.items() if not k.endswith((".q", ".scale", ".mask", ".f16"))}
    for entry in manifest.layers:
        if entry.storage not in ("float32", DEPLOYED):
            key = weight_key(entry.name, entry.kind)
            state[key] = _unpack_weight(key, entry, tensors)
    return manifest, state


def _resized(module: nn.Module, state: dict[str, torch.Tensor], prefix: str) -> nn.Module | None:
    """A copy of ``module`` shaped like its entries in ``state`` (structured pruning), or None."""
    weight = state.get(f"{prefix}weight")
    if weight is None or not hasattr(module, "weight") or module.weight is None:
        return None
    if tuple(weight.shape) == tuple(module.weight.shape):
        return None
    bias = getattr(module, "bias", None) is not None
    if isinstance(module, nn.Linear):
        return nn.Linear(weight.shape[1], weight.shape[0], bias=bias)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return type(module)(weight.shape[1] * module.groups, weight.shape[0], module.kernel_size,
                            stride=module.stride, padding=module.padding, dilation=module.dilation,
                            groups=module.groups, bias=bias, padding_mode=module.padding_mode)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return type(module)(weight.shape[0], eps=module.eps, momentum=module.momentum, affine=module.affine,
                            track_running_stats=module.track_running_stats)
    if isinstance(module, nn.LayerNorm):
        return nn.LayerNorm(tuple(weight.shape), eps=module.eps, elementwise_affine=True)
    raise TypeError(f"cannot reshape {type(module).__name__} at {prefix.rstrip('.')}")


def rebuild(skeleton: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """``skeleton`` (the task's architecture) with its layers resized to and loaded from ``state``."""
    for name, module in list(skeleton.named_modules()):
        prefix = f"{name}." if name else ""
        new = _resized(module, state, prefix)
        if new is not None:
            parent_name, _, child = name.rpartition(".")
            setattr(skeleton.get_submodule(parent_name) if parent_name else skeleton, child, new)
            module = new
        for attr, buffer in list(module._buffers.items()):  # per-unit buffers (a pruned block's head indices)
            saved = state.get(prefix + attr)
            if buffer is not None and saved is not None and saved.shape != buffer.shape:
                module._buffers[attr] = torch.empty_like(saved)
    skeleton.load_state_dict(state, strict=True)
    return skeleton


def load_compressed(directory: str | Path, device: torch.device | str = "cpu",
                    skeleton: nn.Module | None = None) -> nn.Module:
    """The deployable model of an export (its folder, or the zip REST and the dashboard give):
    same weights, real kernels of ``device``.

    The architecture comes from the manifest's task (built from the local model cache, as a
    worker would), unless ``skeleton`` gives it.
    """
    return load_deployment(directory, device, skeleton).model


def load_deployment(directory: str | Path, device: torch.device | str = "cpu",
                    skeleton: nn.Module | None = None) -> Deployment:
    """As :func:`load_compressed`, with the per-layer kernel plan."""
    manifest, state = compressed_state(directory)
    if skeleton is None:
        from paretoml.objectives.tasks.registry import create_task

        skeleton = create_task(manifest.task, manifest.task_options).load(torch.device("cpu")).model
    import copy

    device = torch.device(device)
    config = TrialConfig.from_dict(manifest.config)
    model = copy.deepcopy(skeleton).cpu()
    if any(entry.storage == DEPLOYED for entry in manifest.layers):
        return _load_deployed(manifest, state, model, config, device)
    model = rebuild(model, state)
    if config.kv_bits:  # a causal LM generates with its quantised KV cache, as in its trial
        kv_model.attach_kv_formats(model, config.kv_bits)
    return deployable(model.eval(), config, device, inplace=True, deploy=manifest.deploy(),
                      kernels={entry.name: entry.kernel for entry in manifest.layers})


def _load_deployed(manifest: Manifest, state: dict[str, torch.Tensor], model: nn.Module, config: TrialConfig,
                   device: torch.device) -> Deployment:
    """A runtime export: each layer's kernel restored from the very buffers it ran with, the
    rest of the model resized and given the exported tensors (in their deployed dtypes)."""
    exported_on = torch.device(manifest.export_device)
    if exported_on.type != device.type:
        raise ValueError(f"this export holds kernels packed for {exported_on.type} (runtime mode); load it on "
                         f"{exported_on.type}, or export the trial again on {device.type}")
    plans = []
    for entry in manifest.layers:
        plans.append(LayerPlan(entry.name, tuple(entry.shape),
                               LayerFormat(entry.kind, entry.weight_bits, entry.act_bits, entry.pattern),  # type: ignore[arg-type]
                               entry.own_kernel, entry.kernel))
        if entry.storage == DEPLOYED:
            prefix = f"{entry.name}."
            buffers = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            set_module(model, entry.name, restore_layer(entry.kernel, buffers))
    model = rebuild(model, state)
    for key, tensor in state.items():  # the exported dtypes (bf16 on CUDA), not the skeleton's
        owner_name, _, attr = key.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        current = getattr(owner, attr)
        if isinstance(current, nn.Parameter):
            current.data = tensor
        else:
            owner._buffers[attr] = tensor
    if config.kv_bits:
        kv_model.attach_kv_formats(model, config.kv_bits)
    model = model.to(device).eval()
    if device.type == "cuda":
        model = DeployedModel(model, compute_dtype(device), graphs=True)
    return Deployment(model, device, plans, manifest.deploy())


def weights_file_bytes(directory: str | Path) -> tuple[int, int]:
    """(file size, header size) of the export's safetensors file."""
    path = Path(directory) / read_manifest(directory).weights_file
    with path.open("rb") as handle:
        header = 8 + int.from_bytes(handle.read(8), "little")
    return path.stat().st_size, header


def manifest_json_schema() -> dict[str, Any]:
    return json.loads(json.dumps(Manifest.model_json_schema()))
