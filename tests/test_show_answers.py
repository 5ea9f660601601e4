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


def test_count_step_summary_tells_a_wrong_kind_from_a_wrong_count():
    from rl.show_answers import count_step_summary

    s = count_step_summary([
        ("size_count", "How many large shapes are there?", "<think>I see a. Of these, 1 is small.</think> 1", False),
        ("size_count", "How many large shapes are there?", "<think>I see a. Of these, 2 are large.</think> 2", True),
        ("shape_count", "How many circles are there?", "<think>I see a. Of these, 2 are circles.</think> 1", False),
        ("colour_count", "How many red shapes are there?", "<think>I see a.</think> 3", False),
    ])
    assert s["size_count"]["right_kind"] == 0.5 and s["size_count"]["named"] == {"small": 1, "large": 1}
    assert s["size_count"]["right_kind_accuracy"] == 1.0 and s["size_count"]["answer_is_step"] == 1.0
    assert s["shape_count"]["right_kind"] == 1.0 and s["shape_count"]["answer_is_step"] == 0.0
    assert s["colour_count"]["step"] == 0.0 and s["colour_count"]["right_kind_accuracy"] is None
