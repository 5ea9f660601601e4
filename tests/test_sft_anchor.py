"""GRPO's SFT anchor (`rl.sft_anchor`): batches fixed by (seed, step), the config checks, and one
hybrid GRPO step whose anchor term lowers the NLL of the warm-up examples it was given."""

from __future__ import annotations

import pytest
import torch

from policies.hf_engine import HFEngine
from policies.loading import PolicyConfig, load_policy
from rl.configlib import FieldError
from rl.grpo_trainer import HybridGRPOTrainer, precomputed_reward
from rl.sft_anchor import SFTAnchor, add_anchor, anchor_indices
from rl.sft_data import build_sft_dataset
from rl.stages.grpo import GRPOStageConfig, grpo_args
from tests.test_grpo_trainer import _sampler


def test_batches_depend_on_seed_and_step_only():
    a = anchor_indices(100, 8, seed=0, step=3)
    assert a == anchor_indices(100, 8, seed=0, step=3)  # a resumed run draws the same batch
    assert len(set(a)) == 8 and all(0 <= i < 100 for i in a)
    assert a != anchor_indices(100, 8, seed=0, step=4)
    assert a != anchor_indices(100, 8, seed=1, step=3)
    assert sorted(anchor_indices(5, 8, seed=0, step=0)) == [0, 1, 2, 3, 4]  # capped at the data size
    with pytest.raises(ValueError, match="empty"):
        anchor_indices(0, 8, seed=0, step=0)
    assert float(add_anchor(torch.tensor(1.0), torch.tensor(2.0), 0.5)) == 2.0


def test_config_checks():
    GRPOStageConfig(sft_coef=0.5, sft_batch_size=4).validate()
    with pytest.raises(FieldError, match="sft_coef"):
        GRPOStageConfig(sft_coef=-1.0).validate()
    with pytest.raises(FieldError, match="sft_coef"):
        GRPOStageConfig(sft_coef=float("nan")).validate()
    with pytest.raises(FieldError, match="sft_batch_size"):
        GRPOStageConfig(sft_batch_size=0).validate()


def test_anchor_term_trains_the_warmup_examples(tiny_model_dir, shapes_small, tmp_path):
    model, processor, _ = load_policy(PolicyConfig(name_or_path=tiny_model_dir))
    train = shapes_small["train"].filter(lambda t: t == "short", input_columns="task")
    sft = build_sft_dataset(processor, shapes_small["train"])
    anchor = SFTAnchor(sft, processor, coef=5.0, batch_size=4, seed=0)
    with torch.no_grad():
        before = float(anchor.loss(model.eval(), 0))
    cfg = GRPOStageConfig(steps=1, prompts_per_step=2, num_generations=2, learning_rate=1e-2, save_steps=0)
    args = grpo_args(cfg, str(tmp_path), 16, 1.0, 0)
    args.report_to = []
    engine = HFEngine(model, processor, {"deep": 16, "fast": 6})
    trainer = HybridGRPOTrainer(model=model, reward_funcs=[precomputed_reward], args=args, train_dataset=train,
                                processing_class=processor, sampler=_sampler(engine, processor, train),
                                pool=engine, anchor=anchor)
    trainer.train()
    log = trainer.state.log_history[0]
    assert log["sft_anchor/nll"] == pytest.approx(before, rel=1e-4)  # the step-0 batch was the one trained
    with torch.no_grad():
        after = float(anchor.loss(model.eval(), 0))
    assert after < before - 0.1, (before, after)
