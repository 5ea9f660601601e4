"""Every model family through the whole pipeline (warm-up SFT, hybrid GRPO on vLLM rollouts with weight
sync, RLAIF-V DPO, evaluation) with one-image, two-image and video prompts (`configs/smoke_media.yaml`),
plus the pieces that make the families agree with vLLM: the Qwen2.5-VL text positions after a video,
the trainer scoring under the engines' ban on media tokens, and the preflight media checks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from tests.test_pipeline import PY, ROOT, _env

SMOKE_MEDIA = str(ROOT / "configs" / "smoke_media.yaml")
# family -> extra overrides. Idefics3 has no video input; MiniCPM-V 4.6 runs as its GPU recipe does
# (LoRA on the language model, vision frozen).
FAMILIES = {
    "idefics3": ["data.shapes.motion_share=0"],
    "qwen2_5_vl": [],
    "qwen3_vl": [],
    "minicpmv4_6": ["policy.lora.enabled=true"],
}
# Per-token |trainer - sampler| log-prob bound after each sync: fp32 families 1e-4; MiniCPM-V 4.6 is
# sampled in bf16 on CPU (policies.families.PARITY_BOUNDS).
BOUND = {"minicpmv4_6": 5e-2}


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {n for n, t in after.items() if n in before and not torch.equal(before[n], t)}


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.vllm
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_runs_every_stage_on_image_two_image_and_video_prompts(tmp_path, family):
    from policies.loading import is_vision_param

    proc = subprocess.run([PY, "-m", "rl.train", "--config", SMOKE_MEDIA, f"output_dir={tmp_path}",
                           f"policy.family={family}", *FAMILIES[family]],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    for stage in ("warmup", "grpo"):
        assert set(metrics[stage]["heldout_accuracy"]) >= {"deep", "fast", "mean"}
    for key in ("chair_i", "chair_s"):
        assert set(metrics["rlaifv"][key]) >= {"before", "after"}
    assert metrics["steps"]["warmup"] == 60 and metrics["steps"]["grpo"] == 2 and metrics["steps"]["dpo"] >= 1
    assert metrics["rlaifv"]["rounds"][0]["pairs"] >= 1
    assert metrics["wall_seconds"] > 0 and (tmp_path / "report" / "summary.md").exists()
    assert list((tmp_path / "report").glob("*.png")) and (tmp_path / "rlaifv" / "round_0" / "pairs.parquet").exists()
    assert set(metrics["grpo"]["mean_completion_tokens"]) >= {"deep", "fast"}

    # One GRPO log row per optimizer step, each with the parity measured right after that step's sync,
    # by kind of prompt; every kind the data holds was sampled and each stayed within the bound.
    steps = [r for r in metrics["grpo"]["log"] if "parity/all/max" in r]
    assert len(steps) == 2 and all("sampling/sampling_logp_difference/mean" in r for r in steps)
    kinds = {k.split("/")[1] for r in steps for k in r if k.startswith("parity/") and k != "parity/all/max"}
    assert kinds == {"image", "multi_image"} | ({"video"} if family != "idefics3" else set())
    bound = BOUND.get(family, 1e-4)
    gaps = {f"{i}:{k}": r[k] for i, r in enumerate(steps) for k in r if k.startswith("parity/")}
    assert all(0 <= g <= bound for g in gaps.values()), gaps

    # Every stage moved the weights; the warm-up trains the random vision tower too (warmup.train_vision),
    # GRPO and DPO keep it frozen (policy.freeze_vision), so it never moved after the warm-up.
    init = next(tmp_path.glob("model_init_*"))
    folders = [init, tmp_path / "policy_warmup", tmp_path / "policy_grpo", tmp_path / "policy_rlaifv"]
    weights = [_tensors(f) for f in folders]
    for i, (a, b) in enumerate(zip(folders, folders[1:], strict=False)):
        before, after = weights[i], weights[i + 1]
        moved = _changed(before, after)
        assert moved, f"{b.name}: no parameter changed from {a.name}"
        if b.name != "policy_warmup":
            assert not {n for n in moved if is_vision_param(n)}, f"{b.name}: vision parameters moved"


# ----------------------------------------------------------------------------- unit tests


def test_text_after_a_video_resumes_one_past_the_largest_position():
    from policies.mrope import resume_after_media

    # text(2) video(t=3 at interval 4, h=w=1) text(2), as transformers 5.x numbers it: the text
    # after the video resumes at start + max(h, w) = 3 although the clip's time reached 2 + 8 = 10.
    t = torch.tensor([0, 1, 2, 6, 10, 3, 4])
    pos = torch.stack([t, torch.tensor([0, 1, 2, 2, 2, 3, 4]), torch.tensor([0, 1, 2, 2, 2, 3, 4])]).unsqueeze(1)
    types = torch.tensor([[0, 0, 2, 2, 2, 0, 0]])
    fixed = resume_after_media(pos, types)
    assert fixed[:, 0, 5:].tolist() == [[11, 12]] * 3  # one past the clip's last time position
    assert torch.equal(fixed[:, 0, :5], pos[:, 0, :5])  # nothing before it moved
    # An image (no time extent): already one past its largest position, so unchanged; padding untouched.
    # (a 1x2 image at 2: t = h = 2, w = 2, 3; text resumes at 2 + max(h, w) = 4)
    img = torch.tensor([[0, 1, 2, 2, 4, 5, 1], [0, 1, 2, 2, 4, 5, 1], [0, 1, 2, 3, 4, 5, 1]]).unsqueeze(1)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    assert torch.equal(resume_after_media(img, torch.tensor([[0, 0, 1, 1, 0, 0, 0]]), mask), img)


def test_qwen2_5_vl_positions_follow_the_original_rule_after_a_video(family_model_dir):
    from PIL import Image

    from policies.chat import render_prompt
    from policies.loading import PolicyConfig, load_model, load_processor
    from policies.media import processor_inputs
    from rollouts.types import Video

    path = family_model_dir("qwen2_5_vl")
    model = load_model(path, PolicyConfig(name_or_path=path))  # installs the correction
    processor = load_processor(path)
    # 8 frames of 56 px at 2 fps: 4 temporal positions 50 apart, a 2x2 spatial grid
    clip = Video([Image.new("RGB", (56, 56), (30 * i, 0, 0)) for i in range(8)], 2.0)
    text = render_prompt(processor, [{"role": "user", "content": "Which way does it move?"}], "fast", 0, 1)
    batch = processor(text=[text], **processor_inputs([[]], [[clip]]), return_tensors="pt")
    pos, delta = model.model.get_rope_index(batch["input_ids"], batch["mm_token_type_ids"],
                                            video_grid_thw=batch["video_grid_thw"],
                                            second_per_grid_ts=batch.get("second_per_grid_ts"))
    types = batch["mm_token_type_ids"][0]
    last_video = int((types == 2).nonzero().max())
    assert int(pos[0, 0, last_video + 1]) == int(pos[:, 0, : last_video + 1].max()) + 1
    assert int(delta[0, 0]) == int(pos[:, 0].max()) + 1 - pos.shape[-1]


def test_trainer_scores_under_the_engines_ban_and_restores_the_head(family_model_dir):
    from policies.loading import PolicyConfig, load_model
    from rl.grpo_trainer import banned_logit_bias

    path = family_model_dir("qwen2_5_vl")
    model = load_model(path, PolicyConfig(name_or_path=path))
    head = model.get_output_embeddings()
    hidden = torch.randn(3, head.weight.shape[1])
    banned = [5, 7]
    with banned_logit_bias(model, banned):
        assert head.bias is not None and not head.bias.requires_grad
        logits = head(hidden)
    assert head.bias is None
    plain = head(hidden)
    keep = [i for i in range(plain.shape[-1]) if i not in banned]
    expect = torch.log_softmax(plain[:, keep], -1)
    got = torch.log_softmax(logits, -1)[:, keep]
    assert torch.allclose(got, expect, atol=1e-5)  # the banned tokens' mass is gone, the rest renormalised
    assert (torch.log_softmax(plain, -1)[:, keep] < expect).all()


def test_vllm_normalises_in_the_model_only_where_images_and_videos_share_mean_and_std(family_model_dir):
    from policies.families import device_normalize_ok
    from policies.loading import load_processor

    # The tiny Qwen3-VL keeps transformers' defaults: Qwen2-VL image mean/std, video 0.5 / 0.5.
    qwen3 = load_processor(family_model_dir("qwen3_vl"))
    assert qwen3.image_processor.image_mean != qwen3.video_processor.image_mean
    assert not device_normalize_ok(qwen3)
    assert device_normalize_ok(load_processor(family_model_dir("qwen2_5_vl")))
    qwen3.video_processor.image_mean = list(qwen3.image_processor.image_mean)
    qwen3.video_processor.image_std = list(qwen3.image_processor.image_std)
    assert device_normalize_ok(qwen3)


@pytest.mark.parametrize("overrides, needle", [
    (["data.shapes.motion_share=0.25"], "has no video input; set data.shapes.motion_share: 0"),
    (["policy.family=qwen2_5_vl", "data.shapes.compare_share=0.25"], "set rollout.max_images_per_prompt=2"),
    (["policy.family=qwen2_5_vl", "data.shapes.motion_share=0.25"], "set rollout.max_videos_per_prompt=1"),
])  # fmt: skip
def test_media_the_policy_or_engines_cannot_take_fail_in_preflight(tmp_path, overrides, needle):
    from rl.config import load_train_config
    from rl.configlib import ConfigError
    from rl.train import preflight

    cfg = load_train_config(str(ROOT / "configs" / "smoke.yaml"), [f"output_dir={tmp_path}", *overrides])
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        preflight(cfg)
    assert not (tmp_path / "stages").exists()


def test_dpo_step_on_video_prompts_moves_the_policy(tmp_path, family_model_dir):
    """RLAIF-V's DPO update (TRL DPOTrainer with the video-aware collator) on pairs whose prompts
    hold a clip: it trains, and the language model moves (the pipeline's own round samples image
    descriptions only)."""
    import datasets
    from PIL import Image

    from policies.chat import render_prompt
    from policies.loading import PolicyConfig, load_policy
    from rl.config import load_train_config
    from rl.context import RunContext
    from rl.data.shapes import FEATURES
    from rl.stages.rlaifv import dpo_update

    path = family_model_dir("qwen2_5_vl")
    model, processor, _ = load_policy(PolicyConfig(name_or_path=path), tmp_path)
    frames = [Image.new("RGB", (56, 56), (40 * i, 90, 200 - 40 * i)) for i in range(4)]
    prompt = render_prompt(processor, [{"role": "user", "content": "Which way does the red circle move?"}], "fast", 0, 1)
    eos = processor.tokenizer.eos_token
    features = datasets.Features({"prompt": datasets.Value("string"), "chosen": datasets.Value("string"),
                                  "rejected": datasets.Value("string"), "images": datasets.Sequence(datasets.Image()),
                                  "videos": FEATURES["videos"]})
    dataset = datasets.Dataset.from_dict(
        {"prompt": [prompt] * 2, "chosen": ["left" + eos, "up" + eos], "rejected": ["right" + eos, "down" + eos],
         "images": [[], []], "videos": [[{"frames": frames, "fps": 2.0}]] * 2}, features=features)
    cfg = load_train_config(str(ROOT / "configs" / "smoke.yaml"),
                            [f"output_dir={tmp_path}", "rlaifv.dpo.max_steps=1", "rlaifv.dpo.per_device_train_batch_size=2"])
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    result = dpo_update(RunContext(cfg=cfg, out=tmp_path, data=None, model_path=path), model, processor, dataset, 0)
    assert result["steps"] == 1
    moved = [n for n, p in model.named_parameters() if n in before and not torch.equal(before[n], p.detach())]
    assert moved and not any("visual" in n for n in moved)
