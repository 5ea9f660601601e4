"""Rollout pool on real vLLM engines in Ray actors: mixed modes, weight sync parity, faults."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch
from PIL import Image

from policies.chat import FAST_PREFILL, encode_prompt
from policies.loading import PolicyConfig, load_policy
from policies.scoring import HFScorer
from rollouts.types import RolloutRequest, SamplingSettings, ScoreRequest
from rollouts.weight_sync import collect_trainable

pytestmark = [pytest.mark.ray, pytest.mark.vllm]
QUESTION = [{"role": "user", "content": "What colour is the square?"}]


def _image(rgb=(30, 30, 200)) -> Image.Image:
    img = Image.new("RGB", (64, 64), (240, 240, 240))
    img.paste(Image.new("RGB", (20, 20), rgb), (30, 30))
    return img


def _requests(k: int, n: int = 2, max_tokens: int | None = None) -> list[RolloutRequest]:
    return [
        RolloutRequest(f"r{i}", QUESTION, [_image((40 * i % 255, 80, 120))], "deep" if i % 2 else "fast", n,
                       SamplingSettings(seed=i, max_tokens=max_tokens))
        for i in range(k)
    ]


@pytest.fixture(scope="module")
def trainer(tiny_model_dir):
    model, processor, _ = load_policy(PolicyConfig(name_or_path=tiny_model_dir))
    return model.eval(), processor


def test_mixed_modes_in_one_batch(rollout_pool):
    reqs = _requests(6)
    outs = rollout_pool.generate(reqs)
    assert [o.request_id for o in outs] == [r.request_id for r in reqs]  # request order kept
    for req, out in zip(reqs, outs, strict=False):
        assert out.ok and out.mode == req.mode and out.version == rollout_pool.version
        assert len(out.completions) == 2
        if req.mode == "fast":
            assert out.prompt_text.endswith(FAST_PREFILL)
        else:
            assert out.prompt_text.endswith("<|im_start|>assistant\n")
            assert "<think>" not in out.prompt_text
        for c in out.completions:
            assert len(c.completion_ids) == len(c.logprobs) > 0
            assert len(c.completion_ids) <= (48 if req.mode == "deep" else 12)  # per-mode caps
            assert all(lp <= 0 for lp in c.logprobs)


def test_bad_request_fails_alone(rollout_pool):
    reqs = _requests(3)
    reqs[1] = RolloutRequest("too-long", [{"role": "user", "content": "circle " * 2000}], [_image()], "fast", 1)
    outs = rollout_pool.generate(reqs)
    assert outs[0].ok and outs[2].ok
    assert not outs[1].ok and "max_model_len" in outs[1].error


def _score_request(processor, mode="deep"):
    prompt = encode_prompt(processor, QUESTION, [_image()], mode)
    answer = processor.tokenizer("<think>a blue square</think>\n\nblue", add_special_tokens=False)["input_ids"]
    return ScoreRequest(prompt + answer, [_image()], len(prompt))


def test_weight_sync_parity_and_frozen_vision(rollout_pool, trainer):
    model, processor = trainer
    req = _score_request(processor)
    before = rollout_pool.score([req])[0].logprobs
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    payload = collect_trainable(model, rollout_pool.version + 1)
    assert payload.skipped_frozen and all("vision_model" in n for n in payload.skipped_frozen)
    assert not any("vision_model" in n for n in payload.names)
    stats = rollout_pool.sync(payload)
    assert stats.version == rollout_pool.version and stats.num_bytes == payload.num_bytes
    assert all(h["version"] == rollout_pool.version for h in rollout_pool.health())
    after = rollout_pool.score([req])[0].logprobs
    ref = HFScorer(model, processor).score([req])[0].logprobs
    assert max(abs(a - b) for a, b in zip(after, ref, strict=True)) <= 1e-4
    assert max(abs(a - b) for a, b in zip(after, before, strict=True)) > 1e-2
    outs = rollout_pool.generate(_requests(2))
    assert all(o.version == rollout_pool.version for o in outs)


def test_actor_killed_mid_batch_is_restarted_and_caught_up(rollout_pool, trainer):
    model, _ = trainer
    rollout_pool.sync_from_model(model)  # so a restarted actor (initial weights) must be caught up
    pid = rollout_pool.health()[0]["pid"]
    reqs = _requests(24, n=8, max_tokens=48)
    result = {}

    def work():
        result["outs"] = rollout_pool.generate(reqs)

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 30
    while rollout_pool.in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # let the actor get into the batch
    assert thread.is_alive(), "the batch finished before the actor could be killed"
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)
    outs = result["outs"]
    assert len(outs) == 24 and all(o.ok and len(o.completions) == 8 for o in outs)
    assert all(o.version == rollout_pool.version for o in outs)
    health = rollout_pool.health()[0]
    assert health["pid"] != pid and health["version"] == rollout_pool.version
    assert rollout_pool.stats.actor_deaths >= 1


def test_actor_killed_during_a_weight_push_is_restarted_and_gets_the_push(rollout_pool, trainer, monkeypatch):
    """The issue's mid-sync fault: the actor dies after the buckets are staged and before it has
    confirmed them; the push still returns with every actor on the new weights."""
    model, processor = trainer
    req = _score_request(processor)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    pid = rollout_pool.health()[0]["pid"]
    transport = rollout_pool.transport
    staged = transport.stage

    def stage_then_kill(payload):
        staged(payload)
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)

    monkeypatch.setattr(transport, "stage", stage_then_kill)
    stats = rollout_pool.sync_from_model(model)
    monkeypatch.undo()
    health = rollout_pool.health()[0]
    assert health["pid"] != pid and health["version"] == stats.version == rollout_pool.version
    after = rollout_pool.score([req])[0].logprobs
    ref = HFScorer(model, processor).score([req])[0].logprobs
    assert max(abs(a - b) for a, b in zip(after, ref, strict=True)) <= 1e-4  # the pushed weights, not the initial ones


def test_actor_killed_before_an_rlaifv_labelling_batch_gives_the_same_labels(rollout_pool, tiny_model_dir,
                                                                             shapes_small, monkeypatch):
    """The labelling batch of an RLAIF-V round (the policy as its own labeler, through the pool)
    with the actor killed as the batch is sent: Ray restarts it on its initial weights, the pool
    sees the stale version or the death, catches it up and retries, and every label (hence every
    pair built from them) equals the fault-free run's."""
    from policies.loading import load_processor
    from rewards.rlaifv.claims import ShapesClaimSplitter
    from rewards.rlaifv.labeler import LabelItem, ProbabilityLabeler

    processor = load_processor(tiny_model_dir)
    rows = [r for r in shapes_small["train"] if r["task"] == "description"][:6]
    splitter = ShapesClaimSplitter()
    items = [LabelItem(c, list(r["images"]), r["scene"]) for r in rows for c in splitter.split(r["answer"], r["id"], 0)]
    assert len(items) >= 6
    labeler = ProbabilityLabeler.from_processor(rollout_pool, processor, source="self")
    clean = labeler.label(items)
    pid = rollout_pool.health()[0]["pid"]
    score = rollout_pool.score
    deaths, stale = rollout_pool.stats.actor_deaths, rollout_pool.stats.stale_chunks

    def kill_then_score(requests):
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        return score(requests)

    monkeypatch.setattr(rollout_pool, "score", kill_then_score)
    faulty = labeler.label(items)
    monkeypatch.undo()
    assert rollout_pool.health()[0]["pid"] != pid
    assert rollout_pool.stats.actor_deaths + rollout_pool.stats.stale_chunks > deaths + stale
    assert [lab.accepted for lab in faulty] == [lab.accepted for lab in clean]
    assert max(abs(a.p_yes - b.p_yes) + abs(a.p_no - b.p_no) for a, b in zip(faulty, clean, strict=True)) <= 1e-5
