"""`python -m rl.show_answers`: one scored line per held-out row and mode; a missing policy is named."""

from __future__ import annotations

import pytest

from rl import show_answers


def test_prints_scored_answers_in_both_modes(tiny_model_dir, capsys):
    assert show_answers.main(["--policy", tiny_model_dir, "--config", "configs/smoke.yaml", "--n", "3",
                              "--qtypes", "colour,count"]) == 0
    lines = [ln.split("\t") for ln in capsys.readouterr().out.splitlines() if ln.startswith(("deep\t", "fast\t"))]
    assert [ln[0] for ln in lines] == ["deep"] * 3 + ["fast"] * 3
    assert all(len(ln) == 6 and ln[1] in {"colour", "count"} and ln[4] in {"0", "1"} for ln in lines)


def test_missing_policy_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        show_answers.main(["--policy", str(tmp_path / "nope")])
    assert "--policy" in capsys.readouterr().err
