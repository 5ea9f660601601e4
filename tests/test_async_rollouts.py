"""Asynchronous GRPO rollouts (`rl.async_rollouts`): the staleness bound driven by a fake engine
(versions, order of pushes and batches, errors), and the trainer's async path on the tiny model
with an in-process engine holding its own copy of the weights."""

from __future__ import annotations

import itertools
import threading
import time
from types import SimpleNamespace

import pytest
import torch

from rl.async_rollouts import RolloutPipeline, StalenessError
from rollouts.fake import FakeEngine
from rollouts.types import RolloutRequest, SamplingSettings


class SlowFakeEngine(FakeEngine):
    """FakeEngine whose generation takes time and whose log-probs name the weights version that
    sampled them (-0.01 x (version + 1) per token); it records which thread called it and when."""

    def __init__(self, delay: float = 0.02, apply_pushes: bool = True):
        super().__init__()
        self.delay, self.apply_pushes = delay, apply_pushes
        self.events: list[tuple[str, int]] = []  # ("push" | "generate", version after the call)
        self.threads: set[str] = set()

    def generate(self, requests):
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        self.logprob = -0.01 * (self.version + 1)
        out = super().generate(requests)
        self.events.append(("generate", self.version))
        return out

    def push(self, payload):
        self.threads.add(threading.current_thread().name)
        if self.apply_pushes:
            self.update_weights([], payload.version)
        self.events.append(("push", self.version))


def _pipeline(engine: SlowFakeEngine, k: int, rows_per_batch: int = 2):
    counter = itertools.count()

    def sample(rows):
        reqs = [RolloutRequest(f"r{r}", [{"role": "user", "content": f"q{r}"}], images=[], mode="deep", n=2, sampling=SamplingSettings())
                for r in rows]
        rollouts = engine.generate(reqs)
        return [SimpleNamespace(rollout=ro) for ro in rollouts], {"rows": rows}

    pipeline = RolloutPipeline(sample, lambda: [next(counter) for _ in range(rows_per_batch)], engine.push, k,
                               engine_version=engine.version)
    return pipeline


@pytest.mark.parametrize("k", [0, 1, 2])
def test_no_trained_batch_is_older_than_the_bound_and_log_probs_match_its_version(k):
    engine = SlowFakeEngine()
    pipeline = _pipeline(engine, k)
    trainer_weights = {}  # step -> the trainer's weights (here: a tag), as snapshotted
    seen = []
    try:
        for step in range(6):
            batch = pipeline.batch(step, lambda v, s=step: trainer_weights.setdefault(s, SimpleNamespace(version=v)))
            time.sleep(0.01)  # "training": the engine samples meanwhile
            seen.append(batch)
    finally:
        pipeline.close()
    for batch in seen:
        assert max(batch.staleness) <= k
        for g, v, s in zip(batch.groups, batch.versions, batch.staleness, strict=True):
            assert g.rollout.version == v
            # The sampler log-probs of every completion are those of the version that sampled it, and
            # that version is the snapshot of step (step - staleness).
            assert all(lp == pytest.approx(-0.01 * (v + 1)) for c in g.rollout.completions for lp in c.logprobs)
            assert trainer_weights[batch.step - s].version == v
    # one-step-off / two-steps-off: after the first k steps every batch is exactly k steps old
    assert [max(b.staleness) for b in seen] == [min(step, k) for step in range(6)]
    assert engine.threads == {next(iter(engine.threads))} and "rollout-pipeline" in next(iter(engine.threads))
    # pushes come in version order, one per step (the last ones may be dropped at close, queued
    # behind batches for steps that never come)
    pushes = [v for kind, v in engine.events if kind == "push"]
    assert pushes == list(range(1, len(pushes) + 1)) and len(pushes) >= 6 - k


def test_batches_are_sampled_while_the_trainer_trains():
    engine = SlowFakeEngine(delay=0.2)
    pipeline = _pipeline(engine, 1)
    try:
        pipeline.batch(0, lambda v: SimpleNamespace(version=v))  # waits for batch 0; batch 1 starts
        time.sleep(0.3)  # training step 0 (longer than a generation)
        batch = pipeline.batch(1, lambda v: SimpleNamespace(version=v))
    finally:
        pipeline.close()
    assert batch.trainer_wait_s < 0.1  # batch 1 was ready: it was generated during step 0
    assert batch.engine_idle_s > 0.05  # the engine then waited for step 1's push
    assert batch.metrics()["async/staleness/max"] == 1.0


def test_a_push_the_engine_did_not_apply_is_caught():
    engine = SlowFakeEngine(apply_pushes=False)  # keeps sampling on its start weights (v0)
    pipeline = _pipeline(engine, 1)
    try:
        with pytest.raises(StalenessError, match="never pushed"):
            pipeline.batch(0, lambda v: SimpleNamespace(version=v))
    finally:
        pipeline.close()


def test_a_batch_older_than_the_bound_is_refused():
    engine = SlowFakeEngine()
    pipeline = _pipeline(engine, 1)
    try:
        pipeline.batch(0, lambda v: SimpleNamespace(version=v))
        # Skip the push of step 1 (as a bug would): the batch of step 2 then comes from step 0's weights.
        pipeline._pushed_step = 1
        pipeline.batch(1, lambda v: SimpleNamespace(version=v))
        with pytest.raises(StalenessError, match="max_staleness=1"):
            pipeline.batch(2, lambda v: SimpleNamespace(version=v))
    finally:
        pipeline.close()


def test_worker_errors_reach_the_trainer():
    def sample(rows):
        raise ValueError("engine exploded")

    pipeline = RolloutPipeline(sample, lambda: [0], lambda p: None, 1, engine_version=0)
    try:
        with pytest.raises(ValueError, match="exploded"):
            pipeline.batch(0, lambda v: SimpleNamespace(version=v))
    finally:
        pipeline.close()


def test_async_config_is_checked():
    from rl.config import TrainConfig
    from rl.configlib import ConfigError, from_dict, to_dict

    cfg = from_dict(TrainConfig, {"grpo": {"async": {"enabled": True, "max_staleness": 2}}})
    assert cfg.grpo.async_.enabled and cfg.grpo.async_.max_staleness == 2
    assert to_dict(cfg)["grpo"]["async"] == {"enabled": True, "max_staleness": 2}  # written back under its key
    with pytest.raises(ConfigError, match="grpo.async.max_staleness"):
        from_dict(TrainConfig, {"grpo": {"async": {"enabled": True, "max_staleness": -1}}})
    with pytest.raises(ConfigError, match="grpo.async.enabled"):
        from_dict(TrainConfig, {"grpo": {"async": {"enabled": True}, "old_logps": "trainer",
                                         "trl": {"num_iterations": 2}}})


def test_async_trainer_trains_on_stale_batches_within_the_bound(tiny_model_dir, shapes_small, tmp_path):
    """Three async GRPO steps on the tiny model: the engine (its own copy of the weights, as the
    pool's actors) samples step t+1 while step t trains; step 0's batch is fresh, later ones are
    one step old; the parity monitor only sees fresh rows; the policy moves; after training the
    engine holds the weights of the last step it was pushed."""
    from policies.hf_engine import HFEngine
    from policies.loading import PolicyConfig, load_policy
    from rl.grpo_trainer import HybridGRPOTrainer, precomputed_reward
    from rl.stages.grpo import GRPOStageConfig, grpo_args
    from tests.test_grpo_trainer import _sampler

    policy, processor, _ = load_policy(PolicyConfig(name_or_path=tiny_model_dir))
    engine_model = load_policy(PolicyConfig(name_or_path=tiny_model_dir))[0].eval()
    engine = HFEngine(engine_model, processor, {"deep": 16, "fast": 6})
    train = shapes_small["train"].filter(lambda t: t == "short", input_columns="task")
    cfg = GRPOStageConfig(steps=3, prompts_per_step=2, num_generations=4, learning_rate=1e-2, save_steps=0)
    args = grpo_args(cfg, str(tmp_path), 16, 1.0, 0)
    args.report_to = []
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    weights_at_step = []

    from transformers import TrainerCallback

    class Keep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            weights_at_step.append({n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad})

    trainer = HybridGRPOTrainer(model=policy, reward_funcs=[precomputed_reward], args=args, train_dataset=train,
                                processing_class=processor, sampler=_sampler(engine, processor, train, n=4),
                                pool=engine, banned_token_ids=[t for (t,) in engine.banned], max_staleness=1,
                                callbacks=[Keep()])
    torch.manual_seed(0)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "async/staleness/max" in h]
    assert [h["async/staleness/max"] for h in logs] == [0.0, 1.0, 1.0]
    assert all(h["async/trainer_idle_s"] >= 0 and h["async/engine_idle_s"] >= 0 for h in logs)
    assert "parity/all/max" in logs[0] and logs[0]["parity/all/max"] < 1e-3  # fresh rows: same weights
    assert all("parity/all/max" not in h for h in logs[1:])  # stale rows are not a parity question
    assert logs[1]["sampling/sampling_logp_difference/max"] > logs[0]["sampling/sampling_logp_difference/max"]
    assert trainer.pipeline is None  # closed after training
    moved = [n for n, p in policy.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert moved
    # The engine's last push was the snapshot taken at the start of step 2 (W_2), not later weights.
    engine_params = dict(engine_model.named_parameters())
    assert all(torch.equal(engine_params[n], w) for n, w in weights_at_step[2].items())
    assert not all(torch.equal(engine_params[n], p) for n, p in policy.named_parameters() if p.requires_grad)
