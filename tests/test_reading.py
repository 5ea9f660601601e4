"""`rl.reading`: the gold deep completion cut into scored segments, and teacher-forced scoring
that lines each prediction up with the token it predicts."""

from __future__ import annotations

from rl.reading import gold_segments, reading_summary, row_reading, scored_names, segment_accuracy
from rl.sft_data import deep_completion


def test_gold_segments_join_to_the_trained_completion():
    reasoning = "I see a small green triangle at the top left. There is only one triangle, and it is green."
    pieces = gold_segments(reasoning, "green", "<eos>")
    assert "".join(t for _, t in pieces) == deep_completion(reasoning, "green", "<eos>")
    names = [n for n, _ in pieces]
    assert names == ["inventory", "lookup", "", "answer", ""]
    assert pieces[1][1].startswith(" There")


def test_one_sentence_reasoning_has_no_lookup():
    pieces = gold_segments("I see a red circle.", "1", "<eos>")
    assert [n for n, _ in pieces] == ["inventory", "", "answer", ""]


def test_scored_names_keep_scene_words_the_decision_and_the_answer():
    names = scored_names([
        ("inventory", ["<think>", "I", " see", " a", " small", " green", " triangle", "."]),
        ("lookup", [" None", " of", " them", " is", " a", " red", " circle", "."]),
        ("", ["</think>", "\n", "\n"]),
        ("answer", ["no"]),
    ])
    assert names == ["", "", "", "", "inventory", "inventory", "inventory", "",
                     "decision", "", "", "", "", "lookup", "lookup", "",
                     "", "", "", "answer"]


def test_segment_accuracy_counts_right_and_total_per_segment():
    out = segment_accuracy([1, 2, 3, 4], [1, 9, 3, 4], ["a", "a", "", "b"])
    assert out == {"a": (1, 2), "b": (1, 1)}


class FakeOracle:
    """A fake model whose greedy next token is always the true next token (or, with `wrong`,
    always token 0): checks that predictions are lined up with the targets they score."""

    def __init__(self, wrong: bool = False):
        self.wrong = wrong

    def __call__(self, input_ids, **_):
        import torch

        ids = input_ids[0]
        logits = torch.zeros(len(ids), 4096)
        if not self.wrong:
            logits[torch.arange(len(ids) - 1), ids[1:]] = 1.0
        return type("Out", (), {"logits": logits[None]})()


def test_row_reading_lines_predictions_up_with_targets(tiny_model_dir, shapes_small):
    from policies.loading import load_processor

    processor = load_processor(tiny_model_dir)
    rows = [r for r in shapes_small["train"] if r["qtype"] in {"exists", "colour", "shape"}][:4]
    right = row_reading(FakeOracle(), processor, rows[0])
    assert right and all(r == t for r, t in right.values())
    wrong = row_reading(FakeOracle(wrong=True), processor, rows[0])
    assert all(r == 0 for r, _ in wrong.values()) and wrong.keys() == right.keys()
    summary = reading_summary(FakeOracle(), processor, rows)
    assert summary["all"]["n"] == 4 and summary["all"]["answer"] == 1.0 and summary["all"]["inventory"] == 1.0
