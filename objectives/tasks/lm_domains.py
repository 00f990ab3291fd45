"""Three text domains that ship with the installed Python, for specialists and their merges.

* ``docs``: Python's help topics (``pydoc_data/topics.py``, English prose about the language);
* ``code``: the standard library's own Python source (``*.py`` at the top of the stdlib
  folder, in name order; a different register: identifiers, indentation, comments);
* ``general``: scikit-learn's data-set descriptions (``sklearn/datasets/descr``), English on
  statistics that neither specialist is trained on: what "general text" means here.

Each domain's documents are dealt round-robin into ``train`` (3 of every 5), ``validation``
and ``test`` (1 each), so no document is in two splits; ``general`` has no train split (its
documents alternate between validation and test). The specialists train on their domain's
train split; a recovery fine-tune's calibration mix is the train splits of both, so nothing
tuned has seen a validation or test token.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path
from typing import Literal

from paretoml.objectives.tasks.lm_text import pydoc_topics, sklearn_descriptions

Domain = Literal["docs", "code", "general"]
DomainSplit = Literal["train", "validation", "test"]
SPECIALIST_DOMAINS: tuple[Domain, ...] = ("docs", "code")
ALL_DOMAINS: tuple[Domain, ...] = ("docs", "code", "general")
#: characters kept of each stdlib source file (a few long modules would otherwise dominate)
CODE_CHARS_PER_FILE = 6000


def stdlib_sources() -> list[str]:
    """The first characters of each top-level stdlib module's source, in file-name order."""
    folder = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))
    return [p.read_text(encoding="utf-8", errors="replace")[:CODE_CHARS_PER_FILE] for p in files]


def _documents(domain: Domain) -> list[str]:
    if domain == "docs":
        return pydoc_topics()
    if domain == "code":
        return stdlib_sources()
    if domain == "general":
        return sklearn_descriptions()
    raise ValueError(f"unknown domain {domain!r}; choose from {list(ALL_DOMAINS)}")


def domain_texts(domain: Domain, split: DomainSplit) -> list[str]:
    """One split of one domain's documents; the three splits share no document."""
    docs = _documents(domain)
    if domain == "general":
        if split == "train":
            raise ValueError("the general domain has no train split: no specialist learns it")
        return docs[0::2] if split == "validation" else docs[1::2]
    slot = {"validation": (3,), "test": (4,), "train": (0, 1, 2)}[split]
    return [d for i, d in enumerate(docs) if i % 5 in slot]
