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


def test_split_to_reaches_the_group_count_keeping_every_row_once():
    from rl.length_buckets import split_to

    plan = [[0, 3], [1, 2, 4, 5, 6]]
    out = split_to(plan, 4)
    assert len(out) == 4 and sorted(r for b in out for r in b) == list(range(7))
    assert out[0] == [0, 3] and all(b for b in out)  # the largest bucket is the one halved
    assert split_to(plan, 2) == plan and split_to(plan, 1) == plan  # never fewer than it had
    assert split_to([[0], [1]], 3) == [[0], [1]]  # no more buckets than rows


def _group_plan_worker(rank: int, port: int, out: str) -> None:
    import json
    import os

    import torch.distributed as dist

    from rl.length_buckets import plan_buckets, plan_for_group

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    # rank 0: deep and fast rows (worth several buckets); rank 1: fast rows of one length (one bucket)
    completions = [90, 4, 60, 5, 120, 3, 30, 6] if rank == 0 else [5] * 8
    prompts = [40] * 8
    local = plan_buckets(prompts, completions, 4, 64.0)
    group = plan_for_group(prompts, completions, 4, 64.0)
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump({"local": len(local), "group": group}, f)
    dist.destroy_process_group()


def test_every_rank_of_a_group_gets_the_same_bucket_count(tmp_path):
    """TRL's loss gathers metrics across ranks once per call: ranks whose own plans differ must still
    make the same number of bucket calls (a mismatch aborted gloo on the demo's GRPO)."""
    import json

    import torch.multiprocessing as mp

    from tests.test_pipeline import _free_port

    mp.spawn(_group_plan_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["local"] > 1 and ranks[1]["local"] == 1  # the plans really differ
    assert len(ranks[0]["group"]) == len(ranks[1]["group"]) == ranks[0]["local"]
    assert sorted(i for b in ranks[1]["group"] for i in b) == list(range(8))
