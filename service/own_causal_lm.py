"""``paretoml.search_causal_lm``: compress a causal LM of your own (a Hugging Face folder or
a GGUF file) from Python, with the ``causal-lm`` task's data and metrics.

The path is used in this process only: the task is handed to the runner as an object, so
no spec (and no API client) ever names a path on a server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from paretoml.objectives.tasks.causal_lm import CausalLMOptions, CausalLMTask
from paretoml.service.executors.inprocess import InProcessExecutor
from paretoml.service.own_model import _storage
from paretoml.service.runner import StudyRunner
from paretoml.service.spec import parse_spec


def search_causal_lm(
    path: str | Path,
    *,
    knobs: Sequence[Mapping[str, Any]],
    objectives: Sequence[str | Mapping[str, Any]] = ("perplexity_ratio", "decode_ms_per_token",
                                                     "serving_memory_bytes"),
    task_options: Mapping[str, Any] | None = None,
    n_trials: int = 20,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    sampler: str | Mapping[str, Any] = "tpe",
    measure: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> optuna.Study:
    """Search compressions of the causal LM at ``path`` (a folder with ``config.json``, or a
    ``.gguf`` file, dequantised once into the paretoml cache); returns the Optuna study.
    ``knobs``, ``objectives``, ``task_options`` (:class:`CausalLMOptions`) and ``measure``
    are as in a study spec for the ``causal-lm`` task."""
    task = CausalLMTask(CausalLMOptions.model_validate(dict(task_options or {})), path=path)
    name = study_name or f"causal-lm-{Path(path).stem}"
    document: dict[str, Any] = {
        "name": name,
        "task": task.name,
        "task_options": dict(task_options or {}),
        "knobs": [dict(k) for k in knobs],
        "objectives": [{"name": o} if isinstance(o, str) else dict(o) for o in objectives],
        "sampler": {"name": sampler} if isinstance(sampler, str) else dict(sampler),
        "n_trials": n_trials,
        "seed": seed,
        "measure": dict(measure or {}),
    }
    spec = parse_spec(document, {task.name: task})
    with InProcessExecutor(spec, task=task) as executor:
        return StudyRunner.create(spec, _storage(storage), name, executor).run()
