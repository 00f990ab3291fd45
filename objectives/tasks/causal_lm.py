"""``causal-lm``: any decoder LLM (a Hugging Face causal-LM folder or a GGUF file), compressed
for perplexity, generation fidelity, decode latency and serving memory.

Where the model comes from: a path given from Python (``CausalLMTask(path=...)``), else the
loading process's ``$PARETOML_CAUSAL_LM_PATH`` (a server-side setting: an API client never
names a path on the server). A GGUF file is dequantised once into the paretoml cache
(:mod:`.gguf_cache`). The model runs in fp32 on CPU (the reference); deployment casts it.

Metrics, all against the uncompressed model (its own reference):

* ``perplexity_ratio`` (and ``perplexity``): each held-out window's first half is prefilled
  into the model's KV cache, its second half scored through that cache, so the cache's
  precision is in the number;
* ``generation_fidelity``: greedy continuations of held-out prompts, through the model's
  (quantised) cache, compared token by token with the reference model's;
* ``decode_ms_per_token``: one decode step at the serving shape (batch x context, from the
  options; default batch 64 / context 4096 on CUDA, batch 1 / context 512 on CPU), the cache
  filled to that context;
* ``serving_memory_bytes``: the deployed model's resident tensors plus its KV cache's at that
  shape, counted from the tensors held.

Structured pruning respects grouped-query attention: one unit is a KV head with its group of
query heads (rows of ``q_proj`` / ``k_proj`` / ``v_proj``, columns of ``o_proj``), and FFN
neurons are rows of ``gate_proj`` and ``up_proj`` with columns of ``down_proj``.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from paretoml.objectives.deploy import kv_model
from paretoml.objectives.tasks.base import (
    ExampleInputs,
    ModelBundle,
    ObjectiveDef,
    Scorer,
    Split,
    Task,
    TaskOptions,
)
from paretoml.objectives.tasks.lm_text import TextSplit, split_texts, token_windows
from paretoml.objectives.tasks.sentence_encoder import offline_transformers
from paretoml.search_space.introspect import ChannelLink
from paretoml.search_space.space import TrialConfig

PATH_VARIABLE = "PARETOML_CAUSAL_LM_PATH"
INSTALL_HINT = "pip install 'paretoml[llm]' (transformers and gguf)"
#: the serving shape when the options give none: (batch, context) per device type
DEFAULT_SERVING = {"cuda": (64, 4096), "cpu": (1, 512)}

LM_METRICS: tuple[ObjectiveDef, ...] = (
    ObjectiveDef("perplexity_ratio", "minimize", "measured",
                 "perplexity on held-out text over the uncompressed model's (second half of each window, "
                 "its first half through the KV cache)"),
    ObjectiveDef("generation_fidelity", "maximize", "measured",
                 "share of greedy continuation tokens equal, position by position, to the uncompressed model's"),
    ObjectiveDef("decode_ms_per_token", "minimize", "measured",
                 "median time of one decode step at the serving batch and context (cache filled to it)"),
    ObjectiveDef("serving_memory_bytes", "minimize", "measured",
                 "resident bytes of the deployed model's tensors plus its KV cache at the serving shape"),
    ObjectiveDef("perplexity", "minimize", "measured", "perplexity on held-out text (as perplexity_ratio)"),
)


class CausalLMOptions(TaskOptions):
    context: int = Field(128, ge=8, le=8192, description="tokens per held-out window (perplexity)")
    n_calibration: int = Field(8, ge=1, le=512, description="calibration windows (cheap passes)")
    n_validation: int = Field(16, ge=1, le=512, description="validation windows every trial is scored on")
    n_test: int = Field(16, ge=0, le=512, description="held-out test windows")
    batch_size: int = Field(8, ge=1, le=256, description="windows per scoring batch")
    n_prompts: int = Field(8, ge=0, le=256, description="windows whose first tokens prompt greedy generation")
    prompt_tokens: int = Field(32, ge=1, le=1024)
    new_tokens: int = Field(16, ge=1, le=512, description="greedy tokens compared with the reference's")
    serving_batch: int | None = Field(None, ge=1, le=1024, description="decode batch; default by device")
    serving_context: int | None = Field(None, ge=1, le=131072, description="cache length; default by device")
    decode_warmup: int = Field(2, ge=0, le=100)
    decode_steps: int = Field(8, ge=1, le=1000, description="timed decode steps (the median is kept)")
    decode_threads: int = Field(1, ge=1, le=64, description="CPU threads of the decode timing")


def serving_shape(opts: CausalLMOptions, device: torch.device) -> tuple[int, int]:
    batch, context = DEFAULT_SERVING["cuda" if device.type == "cuda" else "cpu"]
    return opts.serving_batch or batch, opts.serving_context or context


# -- the model ------------------------------------------------------------------------------
def resolve_model_path(path: str | Path) -> Path:
    """A causal-LM folder as given, or the dequantised folder of a GGUF file."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        from paretoml.objectives.tasks.gguf_cache import dequantised_folder

        return dequantised_folder(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is neither a causal-LM folder (config.json) nor a .gguf file")
    return path


def load_causal_lm(folder: Path, device: torch.device) -> tuple[nn.Module, Any]:
    """The fp32 model (eval mode) and its tokenizer, offline."""
    transformers = offline_transformers("causal-lm", INSTALL_HINT)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    return model.to(device).eval(), tokenizer


def decoder_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of each decoder layer (those holding a ``self_attn``)."""
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "self_attn") and hasattr(m, "mlp")]


def causal_lm_links(model: nn.Module) -> dict[str, ChannelLink]:
    """Structured pruning of each Llama-like decoder layer: KV groups with their query heads,
    and FFN neurons (``gate_proj`` with ``up_proj``, into ``down_proj``)."""
    config = model.config
    heads, kv_heads = config.num_attention_heads, getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    group = heads // kv_heads
    links: dict[str, ChannelLink] = {}
    for name, layer in decoder_layers(model):
        attn = f"{name}.self_attn"
        if all(hasattr(layer.self_attn, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")):
            links[f"{attn}.q_proj"] = ChannelLink(consumer=f"{attn}.o_proj", block=group * head_dim,
                                                  siblings=(f"{attn}.k_proj", f"{attn}.v_proj"),
                                                  sibling_block=head_dim)
        if all(hasattr(layer.mlp, p) for p in ("gate_proj", "up_proj", "down_proj")):
            links[f"{name}.mlp.gate_proj"] = ChannelLink(consumer=f"{name}.mlp.down_proj",
                                                         siblings=(f"{name}.mlp.up_proj",))
    return links


# -- measuring ---------------------------------------------------------------------------
def cache_keyword(lm: nn.Module) -> str:
    """The keyword a model's ``forward`` takes its cache by (transformers 5.2x renames
    ``past_key_values`` to ``cache``; older releases know only the first)."""
    return "cache" if "cache" in inspect.signature(type(lm).forward).parameters else "past_key_values"


def language_model(model: nn.Module) -> nn.Module:
    """The causal LM inside a deployment wrapper (CUDA graphs wrap it as ``inner``)."""
    return getattr(model, "inner", model)


def tensor_bytes(*roots: Any) -> int:
    """Bytes of every distinct tensor storage reachable from ``roots`` (a module's parameters
    and buffers; a cache's tensors through containers and object attributes): what is
    resident, each storage counted once."""
    seen: set[int] = set()
    visited: set[int] = set()
    total = 0
    stack: list[Any] = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in visited:
            continue
        visited.add(id(obj))
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        elif isinstance(obj, nn.Module):
            stack.extend(obj.parameters())
            stack.extend(obj.buffers())
            # kernels' packed weights are plain tensor attributes of their modules
            stack.extend(v for m in obj.modules() for v in vars(m).values() if isinstance(v, torch.Tensor))
        elif isinstance(obj, Mapping):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            stack.extend(vars(obj).values())
    return total


def kv_geometry(lm: nn.Module) -> list[tuple[int, int]]:
    """``(kv heads, head dim)`` of each decoder layer as pruned."""
    config = lm.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return [(layer.self_attn.k_proj.out_features // head_dim, head_dim) for _, layer in decoder_layers(lm)]


@torch.inference_mode()
def filled_cache(lm: nn.Module, batch: int, context: int, seed: int = 0) -> Any:
    """The model's cache holding ``context`` tokens per sequence (random keys and values:
    the decode step's cost does not depend on what they are)."""
    cache = kv_model.new_cache(lm)
    dtype = next(lm.parameters()).dtype
    device = next(lm.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    for index, (kv_heads, head_dim) in enumerate(kv_geometry(lm)):
        shape = (batch, kv_heads, context, head_dim)
        keys = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        values = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        cache.update(keys, values, index)
    return cache


class DecodeStep(nn.Module):
    """One decode step of ``lm`` per call, at a fixed batch, from a filled cache: what
    :func:`paretoml.objectives.measure.latency_ms` times (the context grows by one a call)."""

    def __init__(self, lm: nn.Module, cache: Any, batch: int) -> None:
        super().__init__()
        self.lm = lm
        self.cache = cache
        device = next(lm.parameters()).device
        self.register_buffer("token", torch.ones(batch, 1, dtype=torch.long, device=device), persistent=False)

    def forward(self) -> torch.Tensor:
        return self.lm(input_ids=self.token, use_cache=True, **{cache_keyword(self.lm): self.cache}).logits


@dataclass(frozen=True)
class LMReference:
    nll: float
    continuations: torch.Tensor | None


class LMScorer(Scorer):
    """Perplexity, generation fidelity, decode latency and serving memory of a causal LM.

    Args:
        opts: the task's options (windows, prompts, serving shape, decode timing).
        device: where the model runs (it picks the default serving shape).
    """

    metrics = LM_METRICS

    def __init__(self, opts: CausalLMOptions, device: torch.device, pad_token_id: int | None) -> None:
        self.opts = opts
        self.device = device
        self.pad_token_id = pad_token_id
        #: provenance overrides of the last :meth:`score` (a KV format with no kernel on CPU)
        self.last_provenance: dict[str, dict[str, str]] = {}

    @torch.inference_mode()
    def nll(self, model: nn.Module, split: Split) -> float:
        """Mean next-token NLL of each window's second half, its first half in the cache."""
        lm = language_model(model).eval()
        total, count = 0.0, 0
        for batch in split:
            ids = batch["input_ids"]
            half = ids.shape[1] // 2
            cache = {cache_keyword(lm): kv_model.new_cache(lm)}
            lm(input_ids=ids[:, :half], use_cache=True, **cache)
            logits = lm(input_ids=ids[:, half:], use_cache=True, **cache).logits.float()
            targets = ids[:, half + 1 :]
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
            total += float(loss)
            count += targets.numel()
        return total / max(count, 1)

    def prompts(self, split: Split) -> torch.Tensor | None:
        if self.opts.n_prompts == 0:
            return None
        windows = torch.cat([b["input_ids"] for b in split])[: self.opts.n_prompts]
        return windows[:, : self.opts.prompt_tokens]

    @torch.inference_mode()
    def continuations(self, model: nn.Module, prompts: torch.Tensor) -> torch.Tensor:
        """Greedy continuations (new tokens only), through the model's own cache."""
        lm = language_model(model).eval()
        out = lm.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                          max_new_tokens=self.opts.new_tokens, min_new_tokens=self.opts.new_tokens,
                          pad_token_id=self.pad_token_id, **{cache_keyword(lm): kv_model.new_cache(lm)},
                          temperature=None, top_p=None, top_k=None)
        return out[:, prompts.shape[1] :]

    def reference(self, model: nn.Module, split: Split) -> LMReference:
        prompts = self.prompts(split)
        return LMReference(self.nll(model, split), None if prompts is None else self.continuations(model, prompts))

    @torch.inference_mode()
    def decode_ms(self, model: nn.Module) -> float:
        from paretoml.objectives import measure

        lm = language_model(model).eval()
        batch, context = serving_shape(self.opts, self.device)
        step = DecodeStep(lm, filled_cache(lm, batch, context), batch)
        settings = measure.LatencySettings(batch_size=batch, warmup=self.opts.decode_warmup,
                                           repeats=self.opts.decode_steps, threads=self.opts.decode_threads)
        return measure.latency_ms(step, ExampleInputs(), settings)

    @torch.inference_mode()
    def serving_memory(self, model: nn.Module) -> float:
        lm = language_model(model)
        batch, context = serving_shape(self.opts, self.device)
        cache = filled_cache(lm, batch, context)
        return float(tensor_bytes(model) + tensor_bytes(cache))

    def score(self, model: nn.Module, split: Split, reference: LMReference, names: Sequence[str]) -> dict[str, float]:
        values: dict[str, float] = {}
        self.last_provenance = {}
        if {"perplexity", "perplexity_ratio"} & set(names):
            nll = self.nll(model, split)
            values["perplexity"] = math.exp(nll)
            values["perplexity_ratio"] = math.exp(nll - reference.nll)
        if "generation_fidelity" in names:
            prompts = self.prompts(split)
            if prompts is None or reference.continuations is None:
                values["generation_fidelity"] = 1.0
            else:
                found = self.continuations(model, prompts)
                values["generation_fidelity"] = float((found == reference.continuations).float().mean())
        if "decode_ms_per_token" in names:
            values["decode_ms_per_token"] = self.decode_ms(model)
            batch, context = serving_shape(self.opts, self.device)
            if self.device.type != "cuda" and kv_model.is_quantised(kv_model.formats_of(model)):
                self.last_provenance["decode_ms_per_token"] = {
                    "how": "estimated",
                    "detail": f"batch {batch}, context {context}: the quantised KV cache has no CPU kernel; "
                              "it is dequantised for attention (the time of that stand-in)"}
        if "serving_memory_bytes" in names:
            values["serving_memory_bytes"] = self.serving_memory(model)
        return values


# -- the task ------------------------------------------------------------------------------
class CausalLMTask(Task):
    """A causal LM from a folder or GGUF file (``path``, else ``$PARETOML_CAUSAL_LM_PATH``)."""

    name = "causal-lm"
    summary = ("any causal LM (a Hugging Face folder or GGUF file from $PARETOML_CAUSAL_LM_PATH or Python); "
               "perplexity, generation fidelity, decode latency and serving memory on Python's help topics")
    Options = CausalLMOptions
    metrics = LM_METRICS

    def __init__(self, options: CausalLMOptions | None = None, path: str | Path | None = None) -> None:
        super().__init__(options)
        self.path = path

    def model_path(self) -> Path:
        """The model folder (a GGUF file: its dequantised folder in the cache)."""
        given = self.path if self.path is not None else os.environ.get(PATH_VARIABLE)
        if not given:
            raise FileNotFoundError(f"task {self.name!r} needs a model: set ${PATH_VARIABLE} to a causal-LM "
                                    "folder or .gguf file on the server, or give path= from Python")
        return resolve_model_path(given)

    def load(self, device: torch.device) -> ModelBundle:
        opts: CausalLMOptions = self.options  # type: ignore[assignment]
        offline_transformers(self.name, INSTALL_HINT)  # a missing extra says so before any loading
        folder = self.model_path()
        model, tokenizer = load_causal_lm(folder, device)
        counts: dict[TextSplit, int] = {"calibration": opts.n_calibration, "validation": opts.n_validation,
                                        "test": opts.n_test}

        def split(name: TextSplit) -> Split:
            windows = token_windows(tokenizer, split_texts(name), opts.context, counts[name]).to(device)
            batches = [{"input_ids": windows[i : i + opts.batch_size]} for i in range(0, len(windows), opts.batch_size)]
            return Split(batches, size=len(windows), description=f"{name} windows of {opts.context} tokens")

        batch, context = serving_shape(opts, device)
        # one decode token per sequence of the serving batch: the rows each layer's kernel
        # is chosen for, and what introspection runs
        example = ExampleInputs((), {"input_ids": torch.ones(batch, 1, dtype=torch.long, device=device)})
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return ModelBundle(
            model=model,
            example=example,
            validation=split("validation"),
            calibration=split("calibration"),
            test=split("test") if opts.n_test else None,
            scorer=LMScorer(opts, device, pad),
            links=causal_lm_links(model),
            info={"model_folder": str(folder), "serving_batch": batch, "serving_context": context},
        )

    def compress(self, model: nn.Module, config: TrialConfig) -> nn.Module:
        """The trial's KV-cache formats, attached to its compressed model."""
        return kv_model.attach_kv_formats(model, config.kv_bits) if config.kv_bits else model
