"""Hybrid GRPO trainer glue on the tiny model (transformers engine, no Ray): prompt alignment in both
modes, one optimizer step that changes the policy, weight sync hook, the trainer-owned media path
(same log-probs as TRL's own image path), the parity monitor."""

from __future__ import annotations

import itertools

import pytest
import torch

from policies.hf_engine import HFEngine
from policies.loading import PolicyConfig, load_policy
from rewards.breakdown import RewardSuite
from rewards.config import RewardConfig, RewardSpec, StdFilterConfig
from rl.grpo_sampling import GroupSampler
from rl.grpo_trainer import HybridGRPOTrainer, check_prompt_alignment, precomputed_reward
from rl.stages.grpo import GRPOStageConfig, grpo_args
from rollouts.scheduler import ModeScheduler, ScheduleConfig
from rollouts.types import SamplingSettings


@pytest.fixture(scope="module")
def setup(tiny_model_dir, shapes_small):
    model, processor, _ = load_policy(PolicyConfig(name_or_path=tiny_model_dir))
    train = shapes_small["train"].filter(lambda t: t == "short", input_columns="task")
    engine = HFEngine(model, processor, {"deep": 16, "fast": 6})
    return model, processor, train, engine


def length_reward(prompts, completions, **kwargs):
    """A test reward that differs between samples of a group (so advantages are non-zero)."""
    return [len(c) / 100.0 for c in completions]


def _sampler(engine, processor, train, kind="fixed", n=2):
    config = RewardConfig(rewards=[RewardSpec("accuracy", 0.9), RewardSpec("tests.test_grpo_trainer:length_reward", 1.0)])
    suite = RewardSuite.from_config(config, tokenizer=processor.tokenizer, scorer=engine)
    rows = itertools.cycle([train[i] for i in range(len(train))])
    return GroupSampler(engine, suite, ModeScheduler(ScheduleConfig(kind=kind)), StdFilterConfig(enabled=False),
                        rows, n, SamplingSettings())


@pytest.mark.parametrize("kind", ["deep_only", "fast_only"])
def test_actor_prompt_ids_match_the_trainers_tokenization(setup, kind):
    model, processor, train, engine = setup
    groups, _ = _sampler(engine, processor, train, kind).sample([train[i] for i in range(3)])
    assert {g.mode for g in groups} == {kind.split("_")[0]}
    check_prompt_alignment(processor, groups)  # raises on any mismatch
    bad = groups[0]
    bad.rollout.prompt_ids = bad.rollout.prompt_ids[:-1]
    with pytest.raises(RuntimeError, match="differ"):
        check_prompt_alignment(processor, [bad])


def test_one_grpo_step_changes_the_policy_and_syncs(setup, tmp_path):
    model, processor, train, engine = setup
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    cfg = GRPOStageConfig(steps=1, prompts_per_step=2, num_generations=2, learning_rate=1e-2, save_steps=0)
    args = grpo_args(cfg, str(tmp_path), 16, 1.0, 0)
    args.report_to = []
    sampler = _sampler(engine, processor, train)
    trainer = HybridGRPOTrainer(model=model, reward_funcs=[precomputed_reward], args=args, train_dataset=train,
                                processing_class=processor, sampler=sampler, pool=engine)
    v0 = engine.version
    trainer.train()
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed, {k: v for k, v in trainer.state.log_history[0].items() if k.startswith(("reward", "frac", "sampling", "completions/clipped", "entropy"))}  # the optimizer stepped
    assert engine.version > v0  # TRL's weight-sync hook reached our engine
    assert trainer.state.global_step == 1
    log = trainer.state.log_history[0]
    assert "sampling/sampling_logp_difference/mean" in log and "modes/deep_share" in log
    assert log["frac_reward_zero_std"] < 1.0  # each completion kept its own reward


def _batch(processor, rows, mode="deep"):
    """Left-padded prompt + completion ids of `rows` (each row's reasoning/answer as completion)."""
    from policies.chat import encode_prompt
    from rl.data.rows import row_images, row_videos

    pad = processor.tokenizer.pad_token_id
    prompts = [encode_prompt(processor, list(r["prompt"]), row_images(r), mode, row_videos(r)) for r in rows]
    tails = [processor.tokenizer(f"<think>{r['reasoning']}</think>\n\n{r['answer']}", add_special_tokens=False)["input_ids"]
             for r in rows]
    P, T = max(map(len, prompts)), max(map(len, tails))
    ids = torch.tensor([[pad] * (P - len(p)) + p + t + [pad] * (T - len(t)) for p, t in zip(prompts, tails, strict=True)])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * (len(p) + len(t)) + [0] * (T - len(t))
                         for p, t in zip(prompts, tails, strict=True)])
    return ids, mask, T, prompts


def _trainer(model, processor, train, engine, tmp_path):
    args = grpo_args(GRPOStageConfig(steps=1, prompts_per_step=2, num_generations=2, save_steps=0), str(tmp_path), 16, 1.0, 0)
    args.report_to = []
    return HybridGRPOTrainer(model=model, reward_funcs=[precomputed_reward], args=args, train_dataset=train,
                             processing_class=processor, sampler=_sampler(engine, processor, train), pool=engine)


def test_trainer_media_path_gives_trls_own_image_log_probs(setup, tmp_path):
    """The trainer builds the media arguments itself (TRL never sees the images); on single-image
    Idefics3 prompts that must be exactly what TRL's own image path computes, bit for bit, so the
    embedded default trains as before."""
    from trl import GRPOTrainer

    from policies.chat import render_prompt
    from rl.data.rows import row_images

    model, processor, train, engine = setup
    trainer = _trainer(model, processor, train, engine, tmp_path)
    rows = [train[i] for i in range(4)]
    ids, mask, T, _ = _batch(processor, rows)
    trainer._active_media = [(row_images(r), []) for r in rows]
    with torch.no_grad():
        ours, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, T, batch_size=3)
        texts = [render_prompt(processor, list(r["prompt"]), "deep", 1) for r in rows]
        pix = processor(images=[row_images(r) for r in rows], text=texts, padding=True, return_tensors="pt")
        theirs, _, _ = GRPOTrainer._get_per_token_logps_and_entropies(
            trainer, model, ids, mask, T, batch_size=3, pixel_values=pix["pixel_values"],
            pixel_attention_mask=pix["pixel_attention_mask"], num_images=[1] * len(rows))
    assert torch.equal(ours, theirs)


def test_parity_gaps_by_kind():
    from rl.grpo_trainer import media_kind, parity_gaps

    old = torch.tensor([[0.0, -1.0, -2.0], [0.0, -1.0, 5.0], [-1.0, -1.0, -1.0]])
    sampled = torch.tensor([[0.0, -1.001, float("nan")], [0.5, -1.0, 0.0], [-1.0, -1.2, -1.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1]])
    gaps = parity_gaps(old, sampled, mask, ["image", "video", "image"])
    assert gaps == pytest.approx({"all": 0.5, "image": 0.2, "video": 0.5})  # masked and NaN tokens skipped
    assert [media_kind(r) for r in ({"images": []}, {"images": [1]}, {"images": [1, 2]}, {"images": [1], "videos": [2]})] \
        == ["text", "image", "multi_image", "video"]


def test_fill_unscored_and_sampler_gap_stats():
    from rl.grpo_trainer import fill_unscored, sampler_gap_stats

    sampled = torch.tensor([[-1.0, float("nan"), -2.0], [-0.5, -0.5, 0.0]])
    ours = torch.tensor([[-1.1, -3.0, -2.0], [-0.5, -0.4, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    stats = sampler_gap_stats(ours, sampled, mask)  # before the fill: the NaN token is skipped
    assert stats["sampling/sampling_logp_difference/max"] == pytest.approx(0.1)
    assert stats["sampling/sampling_logp_difference/mean"] == pytest.approx(0.05)
    assert stats["sampling/importance_sampling_ratio/min"] == pytest.approx(float(torch.exp(torch.tensor(-0.1))))
    assert stats["sampling/importance_sampling_ratio/max"] == pytest.approx(float(torch.exp(torch.tensor(0.1))))
    old = sampled.clone()
    assert fill_unscored(old, ours) == 1
    assert old[0, 1] == ours[0, 1] and torch.equal(old[1], sampled[1])  # only the unscored token, ratio 1 there


def _one_step(model_dir, processor, train, tmp_path, old_logps, length_buckets=1):
    """One SGD GRPO step of a fresh copy of the tiny model on the same sampled groups; returns
    (parameter change, no-grad policy forwards, the step's log, the groups). Fresh, not a deep copy
    of the module's shared model: a trainer has replaced that model's `forward` with TRL's fused-LM-
    head wrapper, which holds the original model's bound `forward`, so a deep copy would still
    compute with the original's weights (measured: 0.04 nats off)."""
    policy = load_policy(PolicyConfig(name_or_path=model_dir))[0]
    engine = HFEngine(policy, processor, {"deep": 16, "fast": 6})
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    cfg = GRPOStageConfig(steps=1, prompts_per_step=2, num_generations=4, learning_rate=1e-2, save_steps=0,
                          old_logps=old_logps)
    args = grpo_args(cfg, str(tmp_path / f"{old_logps}_b{length_buckets}"), 16, 1.0, 0)
    args.report_to, args.optim = [], "sgd"  # SGD: the update is the gradient, comparable across runs
    trainer = HybridGRPOTrainer(model=policy, reward_funcs=[precomputed_reward], args=args, train_dataset=train,
                                processing_class=processor, sampler=_sampler(engine, processor, train, n=4), pool=engine,
                                old_logps=old_logps, banned_token_ids=[t for (t,) in engine.banned],
                                length_buckets=length_buckets)
    forwards = {"no_grad": 0, "grad": 0}
    inner = trainer._get_per_token_logps_and_entropies

    def counted(*a, **kw):
        forwards["grad" if torch.is_grad_enabled() else "no_grad"] += 1
        return inner(*a, **kw)

    trainer._get_per_token_logps_and_entropies = counted
    torch.manual_seed(0)
    trainer.train()
    delta = {n: p.detach() - before[n] for n, p in policy.named_parameters() if p.requires_grad}
    _one_step.last = (policy, engine)
    return delta, forwards, trainer.state.log_history[0], trainer.last_groups


def test_sampler_old_logps_save_the_extra_forward_and_give_the_same_update(setup, tiny_model_dir, tmp_path):
    """grpo.old_logps=sampler (default) trains with one policy forward per step, not two, and its
    update equals TRL's path (no-grad old forward + vLLM importance-sampling correction) on the same
    samples, up to the trainer-vs-sampler gap; the gap metrics are still logged."""
    _, processor, train, _ = setup
    d_trl, f_trl, log_trl, g_trl = _one_step(tiny_model_dir, processor, train, tmp_path, "trainer")
    d_ours, f_ours, log_ours, g_ours = _one_step(tiny_model_dir, processor, train, tmp_path, "sampler")
    samples = lambda groups: [(g.mode, [c.completion_ids for c in g.rollout.completions]) for g in groups]  # noqa: E731
    assert samples(g_ours) == samples(g_trl)  # same groups: the comparison is about the loss only
    assert f_trl == {"no_grad": 1, "grad": 1} and f_ours == {"no_grad": 0, "grad": 1}
    norm = max(float(d.abs().max()) for d in d_trl.values())
    assert norm > 0  # the step moved the policy
    worst = max(float((d_ours[n] - d_trl[n]).abs().max()) for n in d_trl)
    assert worst <= 1e-3 * norm, (worst, norm)
    for log in (log_trl, log_ours):
        assert log["sampling/sampling_logp_difference/max"] < 1e-3 and "parity/all/max" in log
        assert log["sampling/importance_sampling_ratio/mean"] == pytest.approx(1.0, abs=1e-3)


def test_old_logps_config_is_checked():
    from rl.configlib import FieldError

    with pytest.raises(FieldError, match="old_logps"):
        GRPOStageConfig(old_logps="vllm").validate()
    with pytest.raises(FieldError, match="one optimizer step per generation"):
        GRPOStageConfig(trl={"num_iterations": 2}).validate()
    GRPOStageConfig(old_logps="trainer", trl={"num_iterations": 2}).validate()  # TRL's path allows it
    assert grpo_args(GRPOStageConfig(), "/tmp/x", 16, 1.0, 0).vllm_importance_sampling_correction is False
    assert grpo_args(GRPOStageConfig(old_logps="trainer"), "/tmp/x", 16, 1.0, 0).vllm_importance_sampling_correction


def test_hf_engine_samples_correctly_from_a_model_a_trainer_holds(setup, tiny_model_dir, tmp_path):
    """After a TRL step the trainer's model is in train mode with gradient checkpointing; the HF
    engine must still sample from the model's own distribution (before `eval_mode`, every token
    after the first was off by up to 1.4 nats)."""
    from policies.media import forward_media
    from rl.data.rows import row_images, row_videos
    from rollouts.types import RolloutRequest

    _, processor, train, _ = setup
    _one_step(tiny_model_dir, processor, train, tmp_path, "sampler")
    policy, engine = _one_step.last
    assert policy.training  # left as the trainer had it
    row = train[0]
    rollout = engine.generate([RolloutRequest("r", list(row["prompt"]), row_images(row), "deep", 2)])[0]
    policy.eval()
    for c in rollout.completions:
        ids = torch.tensor([list(rollout.prompt_ids) + list(c.completion_ids)])
        with torch.no_grad():
            logits = policy(input_ids=ids, **forward_media(processor, [row_images(row)], [row_videos(row)], ids)).logits[0]
        logits[:, [t for (t,) in engine.banned]] = float("-inf")
        lp = logits.float().log_softmax(-1)[len(rollout.prompt_ids) - 1 : -1].gather(-1, ids[0, len(rollout.prompt_ids):, None])
        assert torch.allclose(lp.squeeze(-1), torch.tensor(c.logprobs), atol=1e-4), (lp.squeeze(-1), c.logprobs)


def test_length_buckets_give_the_same_update_with_less_padding(setup, tiny_model_dir, tmp_path):
    """grpo.length_buckets: the loss over length buckets (each trimmed to its own widths) gives the
    same SGD update as the one padded batch (dapo normalises by the whole batch's tokens), on the
    same mixed deep/fast groups."""
    _, processor, train, _ = setup
    d_one, _, log_one, g_one = _one_step(tiny_model_dir, processor, train, tmp_path, "sampler")
    d_bkt, f_bkt, log_bkt, g_bkt = _one_step(tiny_model_dir, processor, train, tmp_path, "sampler", length_buckets=4)
    samples = lambda groups: [(g.mode, [c.completion_ids for c in g.rollout.completions]) for g in groups]  # noqa: E731
    assert samples(g_one) == samples(g_bkt) and {g.mode for g in g_one} == {"deep", "fast"}
    assert log_bkt["length_buckets"] > 1 and f_bkt["grad"] == log_bkt["length_buckets"]  # one forward per bucket
    norm = max(float(d.abs().max()) for d in d_one.values())
    worst = max(float((d_bkt[n] - d_one[n]).abs().max()) for n in d_one)
    assert norm > 0 and worst <= 1e-4 * norm, (worst, norm)


def test_prompt_stream_takes_the_rows_from_the_samplers_stream(setup, tmp_path):
    """grpo.prompt_stream: the synchronous loop trains on the sampler's stream of rows (as the
    asynchronous loop does), not on the rows of TRL's dataloader."""
    model, processor, train, engine = setup
    cfg = GRPOStageConfig(steps=1, prompts_per_step=2, num_generations=2, learning_rate=1e-3, save_steps=0)
    args = grpo_args(cfg, str(tmp_path), 16, 1.0, 0)
    args.report_to = []
    stream = [train[i] for i in (7, 3)] + [train[i] for i in range(len(train))]

    def run(prompt_stream):
        trainer = HybridGRPOTrainer(model=model, reward_funcs=[precomputed_reward], args=args, train_dataset=train,
                                    processing_class=processor, pool=engine, prompt_stream=prompt_stream,
                                    sampler=GroupSampler(engine, RewardSuite.from_config(
                                        RewardConfig(rewards=[RewardSpec("accuracy", 1.0)]), tokenizer=processor.tokenizer),
                                        ModeScheduler(ScheduleConfig(kind="fixed")), StdFilterConfig(enabled=False),
                                        iter(list(stream)), 2, SamplingSettings()))
        trainer.train()
        return [g.row["id"] for g in trainer.last_groups]

    assert run(True) == [train[7]["id"], train[3]["id"]]
    assert run(False) != [train[7]["id"], train[3]["id"]]  # TRL's seeded dataloader draws other rows
