"""The Pareto front of a study as rows and as a terminal table."""

from __future__ import annotations

from typing import Any

import optuna
from rich.table import Table

from paretoml.search_space.trial_attrs import BASELINE_ATTR, CONFIG_ATTR, TEST_ACCURACY_ATTR



_SHORT = {"accuracy": "acc", "fidelity": "fidelity", "latency_ms": "latency ms", "model_bytes": "bytes",
          "peak_memory_bytes": "peak mem", "mean_bits": "mean bits"}


def front_rows(study: optuna.Study, objective_names: list[str]) -> list[dict[str, Any]]:
    """Pareto-optimal feasible completed trials, sorted by the first objective."""
    rows = []
    for trial in study.best_trials:
        config = trial.user_attrs.get(CONFIG_ATTR, {})
        bits = list(config.get("bits", {}).values())
        prune = list(config.get("prune", {}).values())
        rows.append(
            {
                "trial": trial.number,
                **dict(zip(objective_names, trial.values)),
                "bits": "/".join(str(b) for b in bits) if bits else "-",
                "prune": "/".join(f"{p:.2f}".lstrip("0") or "0" for p in prune) if prune else "-",
                "test acc": trial.user_attrs.get(TEST_ACCURACY_ATTR),
                "note": trial.user_attrs.get(BASELINE_ATTR, ""),
            }
        )
    rows.sort(key=lambda r: r[objective_names[0]])
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 or value.is_integer() else f"{value:.3f}"
    return str(value)


def front_table(study: optuna.Study, objective_names: list[str], title: str) -> Table:
    """Per-layer bits and prune ratios are listed in the model's layer order."""
    table = Table(title=title)
    rows = front_rows(study, objective_names)
    columns = ["trial", *objective_names, "bits", "prune", "test acc", "note"]
    for column in columns:
        table.add_column(_SHORT.get(column, column), justify="left" if column in ("bits", "prune", "note") else "right")
    for row in rows:
        table.add_row(*(_fmt(row[c]) for c in columns))
    return table
