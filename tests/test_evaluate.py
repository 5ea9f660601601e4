"""Held-out evaluation on a fake engine: exact match, free-form F1, lengths, per mode."""

from __future__ import annotations

import datasets
import pytest

from rewards.verifiers import token_f1
from rl.evaluate import EvalConfig, evaluate
from rollouts.fake import FakeEngine


def test_token_f1_gives_partial_credit_and_exact_answers_one():
    assert token_f1("to the left of the red circle", "to the left of the red circle") == 1.0
    assert token_f1("Below the red circle.", "below the red circle") == 1.0
    assert token_f1("above", "below the red circle") == 0.0
    assert token_f1("to the left of the blue square", "to the left of the red circle") == pytest.approx(0.6)  # articles dropped: 3 of 5 words
    assert token_f1("", "") == 1.0 and token_f1("", "x") == 0.0


def test_evaluate_scores_each_mode_with_exact_match_and_f1():
    rows = [
        {"id": "a", "prompt": [{"role": "user", "content": "q1"}], "images": [], "task": "freeform",
         "answer": "to the left of the red circle", "qtype": None},
        {"id": "b", "prompt": [{"role": "user", "content": "q2"}], "images": [], "task": "short", "answer": "yes", "qtype": "yesno"},
    ]
    answers = {("a", "deep"): "<think>x</think>\n\nto the left of the red circle",
               ("a", "fast"): "to the left of the blue square", ("b", "deep"): "<think>y</think>\n\nno", ("b", "fast"): "yes"}

    def answer(req, k):
        return answers[(req.request_id.rsplit("-", 1)[1], req.mode)]

    out = evaluate(FakeEngine(answer), datasets.Dataset.from_list(rows), EvalConfig(max_examples=0))
    assert out["accuracy_by_task"]["deep"] == {"freeform": 1.0, "short": 0.0}
    assert out["accuracy_by_task"]["fast"] == {"freeform": 0.0, "short": 1.0}
    assert out["freeform_f1"]["deep"] == 1.0
    assert 0.0 < out["freeform_f1"]["fast"] < 1.0
    assert out["accuracy"]["mean"] == 0.5
    assert out["majority_by_qtype"] == {"freeform": {"answer": "to the left of the red circle", "share": 1.0, "n": 1},
                                        "yesno": {"answer": "yes", "share": 1.0, "n": 1}}


def test_majority_baseline_is_the_share_of_the_most_common_gold_answer():
    from rl.evaluate import majority_baseline

    rows = [{"task": "short", "qtype": "count", "answer": a} for a in ("1", "1", "2", "3", "1 ")]
    rows += [{"task": "short", "qtype": "more", "answer": a} for a in ("yes", "No", "no")]
    rows += [{"task": "description", "qtype": "describe", "answer": "a red circle"}]
    assert majority_baseline(rows) == {"count": {"answer": "1", "share": 0.6, "n": 5},
                                       "more": {"answer": "no", "share": 2 / 3, "n": 3}}
