"""The CLI's listing and read-only commands, in process: ``tasks`` keeps bracketed extras,
``studies`` lists a storage, ``front`` on a missing database creates nothing, and ``make demo``
writes the database README's next commands read."""

from __future__ import annotations

import re
from pathlib import Path

import optuna

from paretoml.search_space.trial_attrs import SPEC_ATTR
from paretoml.service.cli import main
from paretoml.service.storage import DEFAULT_STORAGE_URL

ROOT = Path(__file__).resolve().parents[2]


def test_tasks_keeps_extras_in_brackets_and_says_installed(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    lines = {line.split(":")[0]: line for line in out.splitlines()}
    assert "paretoml[transformers]" in out and "paretoml[mpnet]" in out
    # transformers and the model packages are installed here (the test suite's own extras)
    assert "needs" not in out
    assert "installed" in lines["minilm"]


def test_front_on_a_missing_database_creates_nothing_and_names_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'absent.db'}"
    assert main(["front", "nope", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert url in err and "no database" in err
    assert not (tmp_path / "absent.db").exists()
    assert main(["front", "nope"]) == 2  # the default storage, named too
    assert DEFAULT_STORAGE_URL in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert main(["export", "nope", "0", "-o", str(tmp_path / "out"), "--storage", url]) == 2
    assert not (tmp_path / "absent.db").exists()


def test_front_of_an_unknown_study_names_the_storage(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'some.db'}"
    optuna.create_study(storage=url, study_name="other")
    assert main(["front", "nope", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert f"no study named 'nope' in {url}" in err


def test_studies_lists_every_study_of_a_storage(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'many.db'}"
    made = optuna.create_study(storage=url, study_name="from-python", directions=["maximize", "minimize"])
    made.set_user_attr(SPEC_ATTR, {"task": "python-model", "n_trials": 4,
                                         "objectives": [{"name": "accuracy"}, {"name": "model_bytes"}]})
    made.add_trial(optuna.trial.create_trial(values=[0.9, 100.0]))
    plain = optuna.create_study(storage=url, study_name="plain-optuna")
    plain.add_trial(optuna.trial.create_trial(value=1.0))
    assert main(["studies", "--storage", url]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "from-python" in line)
    assert "paretoml.search" in row and "1/4" in row and "accuracy, model_bytes" in row
    assert "plain-optuna" in out and "Optuna" in out
    assert main(["studies", "--storage", f"sqlite:///{tmp_path / 'none.db'}"]) == 2


def test_make_demo_writes_the_database_readme_reads():
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), flags=re.M).group(1)
    storages = re.findall(r"--storage\s+(\S+)", recipe)
    readme = (ROOT / "README.md").read_text()
    using = readme[readme.index("## Using it"):]
    using = using[:using.index("\n## ", 1)]
    # the commands after `make demo` name no storage: they read the default, so the demo must write it
    follow_ups = [line for line in using.splitlines() if line.startswith(".venv/bin/paretoml ")][:5]
    assert follow_ups and not any("--storage" in line for line in follow_ups)
    assert storages in ([], [DEFAULT_STORAGE_URL])
