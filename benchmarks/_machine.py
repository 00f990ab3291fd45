"""One line describing the machine a benchmark ran on, printed above its table."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import optuna


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores, {cpu}, Linux {platform.release()}, Python {platform.python_version()}, "
            f"Optuna {optuna.__version__}")
