"""``paretoml make-checkpoints``: bad input is one line and exit 2, before any model loads."""

from __future__ import annotations

import pytest

from paretoml.service import cli


@pytest.mark.parametrize(("argv", "message"), [
    (["--context", "4"], "specialist_context: Input should be greater than or equal to 8"),
    (["--lr", "2000"], "specialist_lr: Input should be less than or equal to 1"),
])
def test_bad_recipe_is_one_line_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["make-checkpoints", *argv]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"paretoml: error: {message}"]


def test_a_flag_out_of_range_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["make-checkpoints", "--steps", "0"])
    assert exit_.value.code == 2
    assert "argument --steps: must be at least 1" in capsys.readouterr().err
