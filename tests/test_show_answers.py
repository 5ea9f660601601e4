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


def test_inventory_summary_tells_what_was_seen_from_what_was_answered():
    from rl.show_answers import inventory_summary

    inv = "<think>I see a small red circle at the top left and a large blue square at the top right."
    s = inventory_summary([
        ("exists", "Is there a blue square?", inv + " The blue square is at the top right.</think> yes", "yes"),
        ("exists", "Is there a green square?", inv + " None of them is a green square.</think> yes", "no"),
        ("colour", "What colour is the circle?", inv + " It is red.</think> red", "purple"),
        ("shape", "What shape is the green object?", inv + "</think> square", "square"),  # no green object named
    ])
    assert s["exists"] == {"n": 2, "readable": 1.0, "inventory_right": 1.0, "follows": 0.5, "follows_when_right": 0.5}
    assert s["colour"]["inventory_right"] == 0.0 and s["colour"]["follows"] == 1.0
    assert s["colour"]["follows_when_right"] is None
    assert s["shape"]["readable"] == 0.0 and s["shape"]["follows"] is None
    assert s["all"]["n"] == 4 and s["all"]["readable"] == 0.75


def test_inventory_read_back_parses_the_generated_reasoning():
    """The generator's own reasoning for exists / colour / shape questions implies its reference."""
    from rl.data.shapes import make_shapes
    from rl.data.shapes_questions import answer_from_inventory, inventory_objects

    rows = [r for r in make_shapes(num_train_images=40, num_heldout_images=0, seed=2)["train"]
            if r["qtype"] in ("exists", "colour", "shape")]
    assert len(rows) >= 10
    for r in rows:
        question = r["prompt"][-1]["content"]
        assert answer_from_inventory(question, inventory_objects(r["reasoning"])) == r["answer"], (question, r["reasoning"])


def test_reading_flag_prints_teacher_forced_shares(tiny_model_dir, capsys):
    import json

    assert show_answers.main(["--policy", tiny_model_dir, "--config", "configs/smoke.yaml", "--n", "3",
                              "--qtypes", "colour,exists", "--reading"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["all"]["n"] == 3
    assert all(0.0 <= summary["all"][k] <= 1.0 for k in ("inventory", "answer"))
