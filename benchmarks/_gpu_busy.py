"""The share of wall time a GPU was busy, sampled through NVML while a benchmark runs.

NVML's ``utilization.gpu`` is the percentage of its last sample period (1/6 s to 1 s,
set by the driver) during which one or more kernels ran: the measure `nvidia-smi` shows.
A thread reads it every ``period_s``; :meth:`GpuBusy.share` averages the readings taken
inside a window. Without the NVML bindings (``nvidia-ml-py``), ``nvidia-smi`` is read
instead, once a period, which is coarser and costs a process per reading.
"""

from __future__ import annotations

import subprocess
import threading
import time


class GpuBusy:
    def __init__(self, index: int = 0, period_s: float = 0.1) -> None:
        self.index = index
        self.period_s = period_s
        self.samples: list[tuple[float, float]] = []  # (monotonic time, utilisation 0..1)
        self.source = "none"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gpu-busy", daemon=True)
        self._read = self._reader()

    def _reader(self):  # type: ignore[no-untyped-def]
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            self.source = "NVML utilization.gpu"
            return lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
        except Exception:  # no bindings or no driver: fall back to the command line tool
            pass

        def smi() -> float:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                  "-i", str(self.index)], capture_output=True, text=True, timeout=10, check=True)
            return float(out.stdout.strip()) / 100.0

        try:
            smi()
            self.source = "nvidia-smi utilization.gpu"
            return smi
        except Exception:
            return None

    @property
    def available(self) -> bool:
        return self._read is not None

    def __enter__(self) -> GpuBusy:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        assert self._read is not None
        while not self._stop.wait(self.period_s):
            try:
                self.samples.append((time.monotonic(), float(self._read())))
            except Exception:
                pass

    def share(self, start: float, end: float) -> float | None:
        """Mean busy share (0..1) of the readings taken between two ``time.monotonic()``s."""
        inside = [u for t, u in self.samples if start <= t <= end]
        return sum(inside) / len(inside) if inside else None
