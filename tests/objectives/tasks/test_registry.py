import sys
import textwrap

import pytest
import torch

from paretoml.objectives.tasks.base import Task, TaskBundle
from paretoml.objectives.tasks.registry import (
    UnknownTaskError,
    available_tasks,
    create_task,
    register_task,
    task_class,
)


def test_builtin_tasks_are_listed():
    assert {"digits-cnn", "digits-merge"} <= set(available_tasks())


def test_unknown_task_names_the_valid_ones():
    with pytest.raises(UnknownTaskError, match="unknown task 'nope'; available: causal-lm, digits-cnn, digits-merge"):
        task_class("nope")


def test_options_are_validated():
    with pytest.raises(Exception, match="epochs"):
        create_task("digits-cnn", {"epochs": -1})


def test_third_party_task_found_through_the_entry_point_group(tmp_path, monkeypatch):
    """A real installed distribution (dist-info with entry_points.txt) on sys.path."""
    (tmp_path / "acme_tasks.py").write_text(textwrap.dedent('''
        import torch
        from paretoml.objectives.tasks.base import Task, TaskBundle

        class TinyTask(Task):
            name = "acme-tiny"
            summary = "a linear model on noise"

            def load(self, device):
                torch.manual_seed(0)
                x = torch.randn(32, 4)
                return TaskBundle(model=torch.nn.Linear(4, 3), example_input=x[:8], val_inputs=x, val_labels=None)
    '''))
    dist = tmp_path / "acme_tasks-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-tasks\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[paretoml.tasks]\nacme-tiny = acme_tasks:TinyTask\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    tasks = available_tasks()
    assert tasks["acme-tiny"].__module__ == "acme_tasks"
    bundle = create_task("acme-tiny").load(torch.device("cpu"))
    assert bundle.val_labels is None  # scored by fidelity
    sys.modules.pop("acme_tasks", None)


def test_register_task_in_process():
    @register_task
    class Local(Task):
        name = "local-test-task"
        summary = "registered from code"

        def load(self, device: torch.device) -> TaskBundle:  # pragma: no cover - not loaded
            raise NotImplementedError

    assert task_class("local-test-task") is Local
