"""The per-device kernel table: profiled once, cached on disk, used to pick kernels."""

from __future__ import annotations

import json

import torch
from torch import nn

from paretoml.objectives.compress.quantize import quantize_model
from paretoml.objectives.deploy import plan_layers
from paretoml.objectives.deploy.convert import layer_rows
from paretoml.objectives.deploy.kernel_table import KernelTable
from paretoml.search_space.space import TrialConfig

CPU = torch.device("cpu")


def test_entries_are_profiled_once_and_read_back_from_disk(tmp_path):
    path = tmp_path / "table.json"
    table = KernelTable(CPU, path=path)
    first = table.get("int8-dynamic", 64, 128, 8)
    assert first.time_us > 0 and first.eager_us is None and 0 < first.rel_err < 0.02
    stored = json.loads(path.read_text())
    assert list(stored) == ["int8-dynamic|64x128|8"]
    stored["int8-dynamic|64x128|8"]["time_us"] = 123.0  # a second table must not re-profile
    path.write_text(json.dumps(stored))
    assert KernelTable(CPU, path=path).get("int8-dynamic", 64, 128, 8).time_us == 123.0


def test_the_table_picks_only_among_kernels_of_the_layers_own_format(tmp_path):
    """Issue 24: a faster wider kernel is never taken (W8 stays int8 even where fp32 is
    faster); where one format has several kernels (W8A8 on CUDA: fp8 or int8) the table picks."""
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256))
    config = TrialConfig(bits={"0": 8, "2": 8})
    quantize_model(model, config.bits)
    rows = layer_rows(model, ["0", "2"], torch.randn(4, 3, 256))
    assert rows == {"0": 12, "2": 12}
    table = KernelTable(CPU, path=tmp_path / "t.json")
    table._rows = {KernelTable.key("fp32", 256, 256, 12): _row("fp32", 1.0),
                   KernelTable.key("int8-weight-only", 256, 256, 12): _row("int8-weight-only", 9.0)}
    ours = frozenset({"fp32", "int8-weight-only"})  # (where torchao runs, its int8 kernel is W8's one)
    plans = plan_layers(model, config, CPU, ours, rows=rows, table=table)
    assert [p.kernel for p in plans] == ["int8-weight-only"] * 2 and all(p.native for p in plans)
    cuda = torch.device("cuda")  # planning builds nothing: the kernels are named, not probed
    available = frozenset({"bf16", "fp8-rowwise", "int8-dynamic", "int8-weight-only"})
    w8a8 = TrialConfig(bits={"0": 8, "2": 8}, act_bits={"0": 8, "2": 8})
    for fast, slow in (("fp8-rowwise", "int8-dynamic"), ("int8-dynamic", "fp8-rowwise")):
        table._rows = {KernelTable.key(fast, 256, 256, 12): _row(fast, 1.0),
                       KernelTable.key(slow, 256, 256, 12): _row(slow, 9.0),
                       KernelTable.key("bf16", 256, 256, 12): _row("bf16", 0.1)}
        plans = plan_layers(model, w8a8, cuda, available, rows=rows, table=table)
        assert [p.kernel for p in plans] == [fast, fast] and all(p.native for p in plans)


def _row(kernel: str, us: float) -> dict:
    return {"kernel": kernel, "out_features": 256, "in_features": 256, "batch": 12, "time_us": us,
            "eager_us": None, "rel_err": 0.0}


def test_workers_sharing_the_file_keep_each_others_entries(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "shared.json"
    tables = [KernelTable(CPU, path=path) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:  # like Ray workers of one machine, writing at once
        list(pool.map(lambda i: tables[i].get("fp32", 16 * (i + 1), 32, 4), range(4)))
    assert sorted(json.loads(path.read_text())) == [f"fp32|{16 * (i + 1)}x32|4" for i in range(4)]
    assert not list(tmp_path.glob("*.tmp"))
    # and the file is re-read under a lock before each write: none of the four is lost
    for _ in range(3):
        with ThreadPoolExecutor(4) as pool:
            fresh = [KernelTable(CPU, path=tmp_path / "again.json") for _ in range(4)]
            list(pool.map(lambda i: fresh[i].get("fp32", 16 * (i + 1), 32, 4), range(4)))
    assert len(json.loads((tmp_path / "again.json").read_text())) == 4
