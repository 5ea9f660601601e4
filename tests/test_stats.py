"""rl.stats (paired bootstrap, seed summaries) and the report's held-out deltas built on it."""

from __future__ import annotations

import random

import pytest

from rl.report import heldout_deltas, summary_md
from rl.stats import paired_bootstrap, paired_delta, summarise_seeds


def test_paired_bootstrap_finds_a_real_gain_and_no_effect_in_noise():
    rng = random.Random(0)
    before = [float(rng.random() < 0.4) for _ in range(400)]
    # after: every right answer stays right, a third of the wrong ones become right (+20 points)
    after = [1.0 if b else float(rng.random() < 1 / 3) for b in before]
    d = paired_bootstrap(before, after)
    assert d.delta == pytest.approx(sum(after) / 400 - sum(before) / 400)
    assert 0 < d.lo < d.delta < d.hi and d.verdict == "gain"
    # two draws of the same policy: the interval covers 0
    a = [float(rng.random() < 0.5) for _ in range(400)]
    b = [float(rng.random() < 0.5) for _ in range(400)]
    noise = paired_bootstrap(a, b)
    assert noise.lo < 0 < noise.hi and noise.verdict == "no effect"
    assert paired_bootstrap(after, before).verdict == "loss"


def test_pairing_is_tighter_than_the_unpaired_spread():
    # Same questions, same hard/easy split; pairing cancels the shared per-question variance.
    before = [1.0] * 100 + [0.0] * 100
    after = [1.0] * 100 + [0.0] * 90 + [1.0] * 10
    d = paired_bootstrap(before, after, seed=3)
    assert d.delta == pytest.approx(0.05)
    assert d.hi - d.lo < 0.08  # unpaired, two ~0.5 proportions over 200 items would span ~0.2


def test_paired_delta_pairs_by_key_and_bad_input_is_named():
    d = paired_delta({"a": 0.0, "b": 1.0, "c": 0.0}, {"b": 1.0, "c": 1.0, "z": 0.0})
    assert d.n == 2 and d.delta == pytest.approx(0.5)
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap([1.0, 0.0], [1.0])
    assert paired_bootstrap([], []).n == 0


def test_summarise_seeds():
    s = summarise_seeds([0.1, 0.3, 0.2])
    assert (s.mean, s.min, s.max, s.n) == (pytest.approx(0.2), 0.1, 0.3, 3)
    assert s.std == pytest.approx(0.1)
    assert summarise_seeds([0.5]).text() == "0.500"
    with pytest.raises(ValueError):
        summarise_seeds([])


def _eval(scores_deep, scores_fast, questions):
    return {"eval": {"scores": {"deep": scores_deep, "fast": scores_fast}, "questions": questions}}


def test_report_deltas_between_stages_and_mode_gap():
    qs = {f"q{i}": ["short", "colour_count" if i % 2 else "colour"] for i in range(200)}
    w_deep = {q: float(i % 4 == 0) for i, q in enumerate(qs)}
    w_fast = dict(w_deep)
    g_deep = {q: 1.0 if qs[q][1] == "colour_count" else w_deep[q] for q in qs}  # GRPO learns compose, deep only
    metrics = {"warmup": _eval(w_deep, w_fast, qs), "grpo": _eval(g_deep, w_fast, qs)}
    out = heldout_deltas(metrics)
    table = out["stages"]["warmup->grpo"]
    assert table["compose"]["deep"]["verdict"] == "gain" and table["compose"]["deep"]["delta"] == pytest.approx(1.0)
    assert table["perception"]["deep"]["verdict"] == "no effect" and table["perception"]["deep"]["delta"] == 0
    assert table["all"]["fast"]["delta"] == 0
    assert table["all"]["mean"]["delta"] == pytest.approx(0.25)
    assert out["mode_gap"]["grpo"]["compose"]["verdict"] == "gain"
    assert out["mode_gap"]["warmup"]["all"]["delta"] == 0
    md = summary_md({**metrics, "heldout_deltas": out}, [])
    assert "warmup → grpo" in md and "(no effect)" in md and "compose" in md
    assert "new to RL" not in table  # no record of what the warm-up trained on: no such group


def test_new_to_rl_groups_the_qtypes_the_warmup_never_trained_on():
    qs = {f"q{i}": ["short", ("colour_count", "size_count", "colour")[i % 3]] for i in range(300)}
    qs["f0"] = ["freeform", "where"]
    w = {q: 0.0 for q in qs}
    g = {q: 1.0 if qs[q][1] == "colour_count" else 0.0 for q in qs}
    metrics = {"warmup": {**_eval(w, w, qs), "data": {"by_qtype": {"size_count": 10, "colour": 5, "where": 3}}},
               "grpo": _eval(g, w, qs)}
    table = heldout_deltas(metrics)["stages"]["warmup->grpo"]
    assert table["new to RL"]["deep"]["n"] == 100  # colour_count only: not size_count, not free-form
    assert table["new to RL"]["deep"]["delta"] == pytest.approx(1.0)
    assert table["compose"]["deep"]["delta"] == pytest.approx(0.5)  # colour_count and size_count


def test_summary_lists_each_qtype_against_the_majority_answer_prior():
    prior = {"count": {"answer": "1", "share": 0.41, "n": 34}}
    metrics = {"warmup": {"eval": {"majority_by_qtype": prior, "accuracy_by_qtype": {"deep": {"count": 0.15}, "fast": {"count": 0.18}}}},
               "grpo": {"eval": {"majority_by_qtype": prior, "accuracy_by_qtype": {"deep": {"count": 0.41}, "fast": {"count": 0.41}}}}}
    md = summary_md(metrics, [])
    assert "| qtype | n | most common answer (share) | warmup | grpo |" in md
    assert "| count | 34 | 1 (0.41) | 0.15 / 0.18 | 0.41 / 0.41 |" in md
    assert "most common answer" not in summary_md({"grpo": {"eval": {}}}, [])  # older runs: no table


def test_paired_ratio_bootstrap_of_a_pooled_ratio():
    from rl.stats import paired_ratio_bootstrap

    rng = random.Random(0)
    mentions = [rng.randint(1, 4) for _ in range(200)]
    before = [min(m, rng.randint(0, 2)) for m in mentions]
    after = [b // 2 for b in before]  # half the hallucinations gone, same mentions
    out = paired_ratio_bootstrap(before, mentions, after, mentions)
    d, r = out["delta"], out["ratio"]
    assert d.before == pytest.approx(sum(before) / sum(mentions)) and d.after == pytest.approx(sum(after) / sum(mentions))
    assert d.hi < 0 and d.lo < d.delta < d.hi
    assert r.lo < r.after < r.hi < 1.0
    same = paired_ratio_bootstrap(before, mentions, before, mentions)["delta"]
    assert same.delta == 0.0 and same.lo == 0.0 and same.hi == 0.0
    with pytest.raises(ValueError, match="equal-length"):
        paired_ratio_bootstrap([1], [1], [1, 2], [1, 2])
