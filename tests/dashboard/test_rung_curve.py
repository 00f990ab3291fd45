"""The trial page's intermediate curve, from a REST trial document."""

from __future__ import annotations

from paretoml.dashboard.figures import rung_curve_figure


def test_a_pruned_trial_shows_its_curve_up_to_the_rung_that_stopped_it():
    doc = {"state": "pruned", "intermediate_values": {"6": 0.4, "12": 0.1}, "stopped_at": 12}
    fig = rung_curve_figure(doc)
    line, stop = fig.data
    assert list(line.x) == [6, 12] and list(line.y) == [0.4, 0.1]
    assert list(stop.x) == [12] and list(stop.y) == [0.1] and stop.name == "stopped here"


def test_a_complete_trial_has_its_full_curve_and_no_stop_mark():
    fig = rung_curve_figure({"state": "complete", "intermediate_values": {"24": 0.98, "6": 0.9, "12": 0.95},
                             "stopped_at": None})
    assert len(fig.data) == 1 and list(fig.data[0].x) == [6, 12, 24]
    assert not rung_curve_figure({"intermediate_values": {}}).data  # no pruner: a note, no trace


def test_the_x_axis_says_what_a_step_counts():
    doc = {"state": "pruned", "intermediate_values": {"64": 0.7}, "stopped_at": 64, "rung_unit": "validation samples"}
    assert rung_curve_figure(doc).layout.xaxis.title.text == "validation samples"
    older = {"state": "pruned", "intermediate_values": {"6": 0.4}, "stopped_at": 6}  # stored before rung_unit
    assert rung_curve_figure(older).layout.xaxis.title.text == "fine-tune step"
