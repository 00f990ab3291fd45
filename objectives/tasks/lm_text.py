"""English text that ships with the installed packages, for causal-LM tasks (no download).

* validation and test: Python's own ``pydoc_data/topics.py`` (the language reference's help
  topics, about 65k words), its topics alternated between the two splits in sorted order, so
  the two never share a topic;
* calibration (the sensitivity warm start's cheap passes): the dataset descriptions that
  scikit-learn (a dependency) ships in ``sklearn/datasets/descr/*.rst``, another corpus
  entirely, so nothing tuned on calibration has seen a validation or test token.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Literal

import torch

TextSplit = Literal["calibration", "validation", "test"]


def pydoc_topics() -> list[str]:
    """The help topics' distinct texts, by topic name in sorted order (some topics are
    aliases of one text: it is kept once, so no text lands in two splits)."""
    from pydoc_data.topics import topics

    return list(dict.fromkeys(topics[name] for name in sorted(topics)))


def sklearn_descriptions() -> list[str]:
    """The ``.rst`` descriptions of scikit-learn's bundled data sets, in name order."""
    folder = resources.files("sklearn.datasets").joinpath("descr")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".rst")), key=lambda f: f.name)
    return [f.read_text(encoding="utf-8") for f in files]


def split_texts(split: TextSplit) -> list[str]:
    """The documents of one split; calibration, validation and test share none."""
    if split == "calibration":
        return sklearn_descriptions()
    topics = pydoc_topics()
    return topics[0::2] if split == "validation" else topics[1::2]


def token_windows(tokenizer: object, texts: Sequence[str], length: int, count: int) -> torch.Tensor:
    """``count`` windows of ``length`` tokens, ``(count, length)``, cut without overlap from the
    documents joined by blank lines and spread evenly over the whole stream (fewer where the
    stream is short). Each window is scored on its own: perplexity within a window."""
    ids: list[int] = tokenizer("\n\n".join(texts))["input_ids"]  # type: ignore[operator]
    available = len(ids) // length
    if available == 0:
        raise ValueError(f"the text has {len(ids)} tokens, fewer than one window of {length}")
    taken = min(count, available)
    starts = [round(i * available / taken) * length for i in range(taken)]
    return torch.tensor([ids[s : s + length] for s in starts], dtype=torch.long)
