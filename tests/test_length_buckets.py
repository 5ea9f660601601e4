"""Length buckets of a GRPO batch (`rl.length_buckets`): the cut, the trimming, the error-free
edge cases."""

from __future__ import annotations

import torch

from rl.length_buckets import last_filled, plan_buckets, take_rows


def test_plan_separates_short_and_long_rows_and_respects_the_limit():
    prompts = [10] * 8
    comps = [3, 90, 2, 88, 4, 95, 3, 91]  # fast and deep rows interleaved
    buckets = plan_buckets(prompts, comps, max_buckets=2)
    assert sorted(map(sorted, buckets)) == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert len(plan_buckets(prompts, comps, max_buckets=1)) == 1
    assert sorted(i for b in plan_buckets(prompts, comps, 8) for i in b) == list(range(8))  # every row once


def test_plan_keeps_one_bucket_when_the_overhead_outweighs_the_saving():
    prompts, comps = [10] * 4, [5, 6, 7, 8]
    assert len(plan_buckets(prompts, comps, max_buckets=4, overhead=100.0)) == 1
    assert len(plan_buckets(prompts, comps, max_buckets=4, overhead=0.0)) >= 2
    assert plan_buckets([], [], 3) == []


def test_take_rows_trims_prompt_left_and_completion_right():
    prompt_mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    completion_mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    inputs = {"prompt_ids": torch.arange(12).view(3, 4), "prompt_mask": prompt_mask,
              "completion_ids": torch.arange(15).view(3, 5), "completion_mask": completion_mask,
              "old_per_token_logps": torch.zeros(3, 5), "advantages": torch.tensor([1.0, 2.0, 3.0]),
              "media": ["a", "b", "c"], "num_items_in_batch": torch.tensor(8.0)}
    out = take_rows(inputs, [0, 2])
    assert out["prompt_ids"].tolist() == [[2, 3], [10, 11]]  # left padding dropped down to the longest prompt
    assert out["completion_ids"].tolist() == [[0, 1], [10, 11]]  # right padding dropped
    assert out["old_per_token_logps"].shape == (2, 2) and out["advantages"].tolist() == [1.0, 3.0]
    assert out["media"] == ["a", "c"] and float(out["num_items_in_batch"]) == 8.0  # batch-wide count kept
    assert last_filled(completion_mask).tolist() == [2, 5, 1]


def test_bucket_metrics_keep_the_step_extremes():
    from rl.grpo_trainer import merge_extremes

    metrics = {"parity/all/max": [0.5, 1e-5, 3e-5], "sampling/importance_sampling_ratio/min": [0.9, 0.8],
               "entropy": [0.2, 0.4], "old/max": [7.0]}
    merge_extremes(metrics, {"parity/all/max": 1, "sampling/importance_sampling_ratio/min": 0, "entropy": 0,
                             "old/max": 1})
    assert metrics == {"parity/all/max": [0.5, 3e-5], "sampling/importance_sampling_ratio/min": [0.8],
                       "entropy": [0.2, 0.4], "old/max": [7.0]}



def test_a_trainer_group_trains_one_batch_per_rank():
    """TRL's loss all-gathers per-row statistics on every call, so in a trainer group every call must
    carry as many rows on each rank: no buckets there (they aborted gloo on the demo's GRPO)."""
    from types import SimpleNamespace

    import torch

    from rl.grpo_trainer import HybridGRPOTrainer

    completion = torch.zeros(4, 50, dtype=torch.long)
    for row, width in enumerate((2, 3, 40, 50)):
        completion[row, :width] = 1
    inputs = {"prompt_mask": torch.ones(4, 10, dtype=torch.long), "completion_mask": completion}

    def fake_trainer(processes: int) -> SimpleNamespace:  # only what `_buckets` reads
        return SimpleNamespace(length_buckets=4, loss_type="dapo", top_entropy_quantile=1.0, bucket_overhead=0.0,
                               accelerator=SimpleNamespace(num_processes=processes))

    assert len(HybridGRPOTrainer._buckets(fake_trainer(1), inputs)) > 1
    assert HybridGRPOTrainer._buckets(fake_trainer(2), inputs) is None
