"""Recurrent layers (nn.GRU, nn.LSTM) as a layer kind: each weight matrix is a layer that a
bitwidth knob quantizes weight-only, counted in model_bytes and exported; and the share of a
model's parameters that no knob covers, printed and stored."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import paretoml
from paretoml.search_space.trial_attrs import CONFIG_ATTR, COVERAGE_ATTR
from paretoml.objectives.compress.quantize import quantize_model
from paretoml.objectives.measure import dense_fp32_bytes, packed_model_bytes
from paretoml.search_space.coverage import coverage
from paretoml.search_space.introspect import RECURRENT, introspect
from paretoml.search_space.knobs import BitwidthKnob, PruneKnob
from paretoml.search_space.space import JointSpace

SEQUENCES = torch.randn(32, 10, 12, generator=torch.Generator().manual_seed(0))


class Tagger(nn.Module):
    """Most of its bytes in a GRU, as the user's model of the issue."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.gru = nn.GRU(12, 96, batch_first=True)
        self.head = nn.Linear(96, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        return self.head(out[:, -1])


REFERENCE = Tagger().eval()(SEQUENCES).detach()


def fidelity(model: nn.Module) -> dict[str, float]:
    with torch.no_grad():
        return {"fidelity": float(1 / (1 + (model(SEQUENCES) - REFERENCE).abs().mean()))}


def test_gru_and_lstm_matrices_are_layers():
    layers = {layer.name: layer for layer in introspect(Tagger(), SEQUENCES[:2])}
    assert list(layers) == ["gru.weight_ih_l0", "gru.weight_hh_l0", "head"]
    hh = layers["gru.weight_hh_l0"]
    assert hh.kind == RECURRENT and hh.weight_shape == (288, 96) and hh.num_params == 288 * 96 + 288
    assert hh.macs == 288 * 96 * 10  # one matrix-vector product per timestep
    # a two-layer bidirectional LSTM called with keyword inputs (the module walk with hooks)
    lstm = nn.LSTM(8, 16, num_layers=2, bidirectional=True)
    found = introspect(lstm, {"input": torch.randn(5, 3, 8)})
    assert [layer.name for layer in found] == [f"weight_{k}_l{i}{r}" for i in range(2) for r in ("", "_reverse")
                                               for k in ("ih", "hh")]
    assert all(layer.kind == RECURRENT for layer in found)


def test_bitwidth_knob_quantizes_them_and_model_bytes_count_them():
    model = Tagger()
    layers = introspect(model, SEQUENCES[:2])
    space = JointSpace([BitwidthKnob(choices=[4, 8]), PruneKnob(high=0.5, step=0.25)], layers)
    assert {"bits:gru.weight_ih_l0", "bits:gru.weight_hh_l0", "bits:head", "prune:head"} == set(space.param_names)
    assert any("recurrent" in note for note in space.notes)  # pruning skips the gates' rows
    config = space.config_from_params({**space.uniform_params(bits=4)})
    quantize_model(model, config.bits)
    assert len(torch.unique(model.gru.weight_hh_l0[0])) <= 15  # 4-bit: at most 15 levels a row
    packed = packed_model_bytes(model, config.bits)
    assert packed < 0.2 * dense_fp32_bytes(model)
    share = coverage(layers, space, other_params=sum(p.numel() for n, p in model.named_parameters() if "bias" in n))
    assert share.uncovered_fraction < 0.02 and set(share.uncovered_by_kind) == {"other"}


def test_search_covers_the_gru_stores_the_share_and_exports(tmp_path, capsys):
    study = paretoml.search(
        Tagger().eval(), evaluate=fidelity, metrics={"fidelity": "maximize"}, example_inputs=SEQUENCES[:4],
        knobs=[{"kind": "bitwidth", "choices": [4, 8]}], objectives=["fidelity", "model_bytes"], n_trials=3,
        baselines=[4], storage=f"sqlite:///{tmp_path / 'gru.db'}", study_name="gru",
        measure={"latency_repeats": 1, "latency_warmup": 0}, progress=False,
        deploy={"mode": "dequantize-at-load"})  # no CPU kernel runs 4- or 8-bit recurrent matrices: ship packed
    baseline = study.trials[0]
    assert set(baseline.user_attrs[CONFIG_ATTR]["bits"]) == {"gru.weight_ih_l0", "gru.weight_hh_l0", "head"}
    full = dense_fp32_bytes(Tagger())
    assert baseline.values[1] < 0.2 * full  # the GRU's bytes shrink with its bits
    stored = study.user_attrs[COVERAGE_ATTR]
    assert stored["params"] == sum(p.numel() for p in Tagger().parameters()) and stored["uncovered_fraction"] < 0.02
    assert "% of the model's" in capsys.readouterr().err
    manifest = paretoml.export(study, baseline, model=Tagger().eval(), example_inputs=SEQUENCES[:4],
                               out=tmp_path / "out")
    assert {e.name: e.kind for e in manifest.layers}["gru.weight_hh_l0"] == RECURRENT
    loaded = paretoml.load_compressed(tmp_path / "out", skeleton=Tagger())
    assert fidelity(loaded)["fidelity"] == pytest.approx(baseline.values[0], rel=1e-4)


def test_a_model_mostly_outside_the_knobs_says_so(tmp_path, capsys):
    study = paretoml.search(
        Tagger().eval(), evaluate=fidelity, metrics={"fidelity": "maximize"}, example_inputs=SEQUENCES[:4],
        knobs=[{"kind": "bitwidth", "choices": [4, 8], "layers": {"include": "^head$"}}],
        objectives=["fidelity", "model_bytes"], n_trials=1, progress=False,
        measure={"latency_repeats": 1, "latency_warmup": 0})
    share = study.user_attrs[COVERAGE_ATTR]
    assert share["uncovered_fraction"] > 0.95 and list(share["uncovered_by_kind"])[0] == RECURRENT
    err = capsys.readouterr().err
    assert "% of the model's" in err and "recurrent" in err
