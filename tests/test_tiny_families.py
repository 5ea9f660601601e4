"""Tiny factories of every family: they load, honour the thinking switch, carry the family's
special tokens and run images (and video where the family has it) through the model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from policies.chat import FAST_PREFILL, render_prompt
from policies.tiny import FAMILIES, build_tiny_model
from rl.data.scenes import random_scene, render

SPECIAL = {
    "idefics3": ["<image>", "<fake_token_around_image>", "<global-img>"],
    "qwen2_5_vl": ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
    "qwen3_vl": ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
    "minicpmv4_6": ["<|image_pad|>", "<|video_pad|>", "<image>", "</image>", "<slice>", "</slice>",
                    "<image_id>", "</image_id>"],
}
QUESTION = [{"role": "user", "content": "How many circles are there?"}]


def _images(n: int, size: int = 64):
    return [render(random_scene(random.Random(i)), size) for i in range(n)]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_folder_loads_and_runs_images(family, family_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = Path(family_model_dir(family))
    spec = json.loads((path / "tiny_spec.json").read_text())
    assert spec["family"] == family
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == family
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    text_cfg = model.config.get_text_config()
    assert getattr(text_cfg, "head_dim", text_cfg.hidden_size // text_cfg.num_attention_heads) >= 32
    tok = processor.tokenizer
    for token in SPECIAL[family] + ["<think>", "</think>", "<|im_start|>", "<|im_end|>"]:
        ids = tok(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] != tok.unk_token_id, (family, token, ids)
    deep = render_prompt(processor, QUESTION, "deep", num_images=2)
    fast = render_prompt(processor, QUESTION, "fast", num_images=2)
    assert fast.endswith(FAST_PREFILL) and not deep.endswith(FAST_PREFILL) and fast.startswith(deep)
    batch = processor(text=[deep], images=[_images(2)], return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape and torch.isfinite(logits).all()


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "minicpmv4_6"])
def test_video_families_take_frames_with_metadata(family, family_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = family_model_dir(family)
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    frames = np.stack([np.asarray(im) for im in _images(4)])
    meta = {"total_num_frames": 4, "fps": 2.0, "width": 64, "height": 64, "duration": 2.0,
            "frames_indices": [0, 1, 2, 3]}
    text = render_prompt(processor, QUESTION, "deep", num_images=0, num_videos=1)
    batch = processor(text=[text], videos=[frames], video_metadata=[meta], return_tensors="pt")
    assert any(k.startswith("pixel_values_videos") or k == "pixel_values_videos" for k in batch) or "target_sizes_videos" in batch
    with torch.no_grad():
        logits = model(**batch).logits
    assert torch.isfinite(logits).all()


def test_idefics3_folder_is_the_one_the_factory_always_wrote(tmp_path, tiny_model_dir):
    """Same seed, same bytes: the Idefics3 weights and tokenizer did not change when the factory
    learned other families (earlier results stay reproducible)."""
    import hashlib

    again = build_tiny_model(tmp_path / "again", seed=0, size="tiny", family="idefics3")
    for name in ("model.safetensors", "tokenizer.json", "config.json", "processor_config.json"):
        a = hashlib.sha256((Path(tiny_model_dir) / name).read_bytes()).hexdigest()
        b = hashlib.sha256((again / name).read_bytes()).hexdigest()
        assert a == b, name
    # The digest of the weights the factory wrote before it had families (git 449deca).
    digest = hashlib.sha256((again / "model.safetensors").read_bytes()).hexdigest()
    assert digest.startswith("58f1cafa032f7d0d"), digest


def test_unknown_family_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown tiny-model family 'llava'"):
        build_tiny_model(tmp_path / "x", family="llava")
