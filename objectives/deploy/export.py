"""Export a compressed model as a file, and rebuild its deployable form from that file.

A directory holds ``model.safetensors`` and ``manifest.json``. Each knob layer's weight is
stored in the packed format that ``model_bytes`` counts (:mod:`paretoml.objectives.measure`):
b-bit integers bit-packed (``.q``) with fp16 row scales (``.scale``), or, where cheaper,
a bitmap of the non-zeros (``.mask``) and only their values; 16-bit weights as fp16.
Everything else is the state dict as it is. The manifest (a pydantic model, validated on
load) says what each layer is and which kernel ran it, with the trial's objectives and
their provenance, so the file size and the reloaded model can be checked against the trial.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from torch import nn

from paretoml.objectives.deploy import kv_model
from paretoml.objectives.deploy.convert import Deployment, deployable, layer_format, plan_layers
from paretoml.objectives.deploy.pack import pack_bits, pack_mask, to_int_weight, unpack_bits, unpack_mask
from paretoml.search_space.introspect import layer_weight, weight_key
from paretoml.search_space.space import TrialConfig

MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
FORMAT_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LayerEntry(_Strict):
    name: str
    kind: str
    shape: list[int]
    weight_bits: int
    act_bits: int | None = None
    pattern: str = "dense"
    storage: str = Field(description="packed | bitmap | float16 | float16-bitmap")
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


@torch.no_grad()
def export_compressed(model: nn.Module, config: TrialConfig, out_dir: str | Path, *, task: str,
                      task_options: dict[str, Any] | None = None, device: torch.device | str = "cpu",
                      objectives: dict[str, float] | None = None,
                      provenance: dict[str, dict[str, str]] | None = None,
                      study: str | None = None, trial: int | None = None) -> Manifest:
    """Write ``model`` (the trial's compressed model: quantized values, pruned zeros) to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plans = {p.name: p for p in plan_layers(model, config, torch.device(device))}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors: dict[str, torch.Tensor] = {}
    entries: list[LayerEntry] = []
    for name, plan in plans.items():
        weight = layer_weight(model, name)
        key = weight_key(name, plan.format.kind)
        fmt = layer_format(name, plan.format.kind, config)
        if fmt.weight_bits < 32:
            packed, storage, nnz = _pack_weight(key, weight, fmt.weight_bits)
            tensors.update(packed)
            state.pop(key)
        else:
            storage, nnz = "float32", int(torch.count_nonzero(weight))
        entries.append(LayerEntry(name=name, kind=fmt.kind, shape=list(plan.shape), weight_bits=fmt.weight_bits,
                                  act_bits=fmt.act_bits, pattern=fmt.pattern, storage=storage, nnz=nnz,
                                  kernel=plan.kernel, own_kernel=plan.own_kernel))
    tensors.update(state)
    manifest = Manifest(
        paretoml_version=_version(), torch_version=torch.__version__, task=task, task_options=task_options or {},
        study=study, trial=trial, config=config.to_dict(), layers=entries, objectives=objectives or {},
        provenance=provenance or {}, export_device=str(device),
        kv_formats=[f.label for f in kv_model.formats_of(model) or []],
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
        if entry.storage != "float32":
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
        new = _resized(module, state, f"{name}." if name else "")
        if new is not None:
            parent_name, _, child = name.rpartition(".")
            setattr(skeleton.get_submodule(parent_name) if parent_name else skeleton, child, new)
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

    model = rebuild(copy.deepcopy(skeleton).cpu(), state)
    config = TrialConfig.from_dict(manifest.config)
    if config.kv_bits:  # a causal LM generates with its quantised KV cache, as in its trial
        kv_model.attach_kv_formats(model, config.kv_bits)
    return deployable(model.eval(), config, torch.device(device), inplace=True)


def weights_file_bytes(directory: str | Path) -> tuple[int, int]:
    """(file size, header size) of the export's safetensors file."""
    path = Path(directory) / read_manifest(directory).weights_file
    with path.open("rb") as handle:
        header = 8 + int.from_bytes(handle.read(8), "little")
    return path.stat().st_size, header


def manifest_json_schema() -> dict[str, Any]:
    return json.loads(json.dumps(Manifest.model_json_schema()))
