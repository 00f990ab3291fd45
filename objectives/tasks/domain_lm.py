"""Scoring a causal LM on several text domains at once: one perplexity per domain, beside
generation fidelity, decode latency and serving memory (:class:`.causal_lm.LMScorer`'s).

A split's batches are ``{"input_ids": windows, "domain": name}``; the scorer groups them by
domain, so rungs that score a spread of the split keep every domain in it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from paretoml.objectives.tasks.base import ObjectiveDef, Split
from paretoml.objectives.tasks.causal_lm import LM_METRICS, CausalLMOptions, LMScorer
from paretoml.objectives.tasks.lm_domains import Domain

DOMAIN_KEY = "domain"
#: the domain-free metrics kept from the causal-LM task
SHARED_METRICS = ("generation_fidelity", "decode_ms_per_token", "serving_memory_bytes")


def perplexity_metric(domain: str) -> str:
    """The objective name of a domain's perplexity: ``perplexity_docs``."""
    return f"perplexity_{domain}"


def domain_metrics(domains: Sequence[Domain]) -> tuple[ObjectiveDef, ...]:
    per_domain = tuple(ObjectiveDef(perplexity_metric(d), "minimize", "measured",
                                    f"perplexity on held-out {d!r} text (second half of each window, its first "
                                    "half through the KV cache)") for d in domains)
    return per_domain + tuple(m for m in LM_METRICS if m.name in SHARED_METRICS)


def tagged_batches(windows: dict[str, torch.Tensor], batch_size: int) -> list[dict[str, object]]:
    """Batches of each domain's windows, tagged with the domain, domains in the given order."""
    return [{"input_ids": w[i : i + batch_size], DOMAIN_KEY: d}
            for d, w in windows.items() for i in range(0, len(w), batch_size)]


@dataclass(frozen=True)
class DomainReference:
    nll: dict[str, float]
    continuations: torch.Tensor | None


class DomainLMScorer(LMScorer):
    """Per-domain perplexity plus the causal-LM scorer's generation fidelity (prompts drawn
    from every domain alike), decode latency and serving memory.

    Args:
        opts: the task's options; ``n_prompts`` is spread over the domains.
        device: where the model runs.
        pad_token_id: the tokenizer's pad (else end-of-sequence) id.
        domains: the domains scored, in order.
    """

    def __init__(self, opts: CausalLMOptions, device: torch.device, pad_token_id: int | None,
                 domains: Sequence[Domain]) -> None:
        super().__init__(opts, device, pad_token_id)
        self.domains = tuple(domains)
        self.metrics = domain_metrics(self.domains)

    @staticmethod
    def of_domain(split: Split, domain: str) -> Split:
        return Split(lambda: (b for b in split if b[DOMAIN_KEY] == domain), description=f"{domain} windows")

    def prompts(self, split: Split) -> torch.Tensor | None:
        if self.opts.n_prompts == 0:
            return None
        share = -(-self.opts.n_prompts // len(self.domains))
        picked = [b["input_ids"] for d in self.domains for b in self.of_domain(split, d)]
        by_domain = [torch.cat([b["input_ids"] for b in self.of_domain(split, d)] or [picked[0][:0]])[:share]
                     for d in self.domains] if picked else []
        return torch.cat(by_domain)[: self.opts.n_prompts, : self.opts.prompt_tokens] if picked else None

    def domain_nll(self, model: nn.Module, split: Split) -> dict[str, float]:
        """Each domain's NLL; NaN for a domain the split lacks (the calibration mix has no
        general text)."""
        return {d: self._nll_or_nan(model, self.of_domain(split, d)) for d in self.domains}

    def _nll_or_nan(self, model: nn.Module, split: Split) -> float:
        return self.nll(model, split) if any(True for _ in split) else math.nan

    def reference(self, model: nn.Module, split: Split) -> DomainReference:  # type: ignore[override]
        prompts = self.prompts(split)
        return DomainReference(self.domain_nll(model, split),
                               None if prompts is None else self.continuations(model, prompts))

    def score(self, model: nn.Module, split: Split, reference: DomainReference,  # type: ignore[override]
              names: Sequence[str]) -> dict[str, float]:
        wanted = set(names)
        values: dict[str, float] = {}
        for domain in self.domains:
            if perplexity_metric(domain) in wanted:
                values[perplexity_metric(domain)] = math.exp(self._nll_or_nan(model, self.of_domain(split, domain)))
        shared = [n for n in names if n in SHARED_METRICS]
        if shared:
            values.update(super().score(model, split, reference, shared))  # type: ignore[arg-type]
        return values
