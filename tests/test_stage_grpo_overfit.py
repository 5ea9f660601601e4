"""GRPO's "overfit one batch": on eight fixed prompts our GRPO stage must raise its own reward.

The tiny model is first taught the answer format by SFT on both answers of every prompt (each of
eight yes/no questions appears once with "yes" and once with "no"), so it answers in the right
format but picks yes or no about evenly: rule accuracy ~0.5. Only the reward can tell it which answer
is right. The GRPO stage's own code (`rl.stages.grpo.prepare` / `make_trainer`: the rollout pool's
vLLM actor, weight sync every step, rewards, TRL's loss) then trains on the same eight prompts in
fast mode, 16 samples per prompt at lr 2e-4. Measured: with 4 prompts x 8 samples, lr 1e-3 (and
3e-4 inside the full suite) collapsed to one answer for every prompt, after which every group has
zero reward spread and nothing more is learned; lr 1e-4 had not moved after 24 steps. If the loop
stops learning (rewards misaligned with rows, a loss that does not reach the weights, stale
weights on the sampler), the accuracy stays at ~0.5 and this test fails.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.ray]

STEPS = 40
WINDOW = 5


def _fixed_rows():
    """Eight yes/no questions about eight scenes: four answered yes, four no."""
    from rl.data.shapes import make_shapes

    rows = make_shapes(num_train_images=40, num_heldout_images=0, questions_per_image=1, seed=5,
                       task_weights={"short": 1.0}, short_qtypes=["exists"])["train"]
    yes = [i for i, a in enumerate(rows["answer"]) if a == "yes"][:4]
    no = [i for i, a in enumerate(rows["answer"]) if a == "no"][:4]
    return rows.select(yes + no)


def _both_answers(rows):
    """Every row twice, once with each answer: SFT teaches the format, not the answer."""
    import datasets

    flipped = rows.map(lambda r: {"answer": "no" if r["answer"] == "yes" else "yes", "id": r["id"] + "-flip"})
    return datasets.concatenate_datasets([rows, flipped])


def test_grpo_raises_its_own_reward_on_fixed_prompts(tmp_path, tiny_model_dir, rollout_pool):
    from policies.loading import freeze_vision, load_model
    from rl.config import TrainConfig
    from rl.configlib import from_dict
    from rl.context import RunContext
    from rl.data.loader import LoadedData
    from rl.data.shapes import empty_dataset
    from rl.sft_data import build_sft_dataset
    from rl.stages import grpo, warmup

    rows = _fixed_rows()
    cfg = from_dict(TrainConfig, {
        "output_dir": str(tmp_path), "seed": 0, "stages": ["grpo"],
        "policy": {"name_or_path": tiny_model_dir},
        "warmup": {"steps": 40, "batch_size": 8, "learning_rate": 3e-3, "train_vision": False, "logging_steps": 1,
                   "trl": {"report_to": [], "disable_tqdm": True}},
        "grpo": {"steps": STEPS, "prompts_per_step": 8, "num_generations": 16, "learning_rate": 2e-4,
                 "tasks": ["short"], "save_steps": 0, "trl": {"report_to": [], "disable_tqdm": True}},
        "rollout": {"schedule": {"kind": "fast_only"}, "max_tokens": {"deep": 48, "fast": 12}},
        "rewards": {"std_filter": {"enabled": False}},
    })
    # 1. SFT on both answers of every prompt (fast mode): the format, not the answer.
    sft_ctx = SimpleNamespace(cfg=cfg, out=tmp_path, model_path=tiny_model_dir)
    model, processor = warmup.load_for_training(sft_ctx, cfg.warmup)
    sft_rows = build_sft_dataset(processor, _both_answers(rows), mode_mix=0.0, hard_qtypes=[])
    warmup.train(sft_ctx, cfg.warmup, model, processor, sft_rows)
    policy = warmup.save_policy(model, processor, Path(tmp_path) / "policy_sft")

    # 2. GRPO through the stage's own code on the same four prompts.
    ctx = RunContext(cfg=cfg, out=tmp_path, data=LoadedData(train=rows, eval=empty_dataset()),
                     model_path=str(policy), engine=rollout_pool)
    try:
        setup = grpo.prepare(ctx)
        args = grpo.grpo_args(cfg.grpo, str(tmp_path / "grpo"), 12, 1.0, cfg.seed)
        trainer = grpo.make_trainer(setup, args, rollout_pool)
        trainer.train()
        log = [r for r in trainer.state.log_history if "fast/accuracy" in r]
        acc = [r["fast/accuracy"] for r in log]
        reward = [r["reward"] for r in log]
    finally:  # the pool is shared by the session: give it back the random tiny model's weights
        original = load_model(tiny_model_dir, cfg.policy)
        freeze_vision(original)
        rollout_pool.sync_from_model(original)
    print("overfit accuracy per step", acc)
    assert len(acc) == STEPS
    first, last = sum(acc[:WINDOW]) / WINDOW, sum(acc[-WINDOW:]) / WINDOW
    assert 0.3 <= first <= 0.7, f"SFT on both answers should leave the policy undecided, accuracy {first:.2f}"
    # Measured (three seeds, this machine): 0.50-0.53 over the first 5 steps, 0.74-0.95 over the last 5.
    assert last >= first + 0.15 and last >= 0.65, f"GRPO did not learn: accuracy {first:.2f} -> {last:.2f} ({acc})"
    assert sum(reward[-WINDOW:]) / WINDOW > sum(reward[:WINDOW]) / WINDOW + 0.1
