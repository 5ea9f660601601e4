"""Tiny VLM factory, chat template with the thinking switch, policy loading, HF/vLLM parity."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from policies.chat import FAST_PREFILL, render_prompt, to_multimodal_messages
from policies.loading import PolicyConfig, PolicyError, load_policy, resolve_model_path
from policies.scoring import HFScorer
from policies.tokens import MediaExpansion, banned_media_tokens
from rollouts.types import ScoreRequest

QUESTION = [{"role": "user", "content": "What colour is the circle?"}]


def _image(rgb=(200, 30, 30)) -> Image.Image:
    img = Image.new("RGB", (64, 64), (240, 240, 240))
    img.paste(Image.new("RGB", (24, 24), rgb), (8, 8))
    return img


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    model, processor, _ = load_policy(PolicyConfig(name_or_path=tiny_model_dir))
    return model.eval(), processor


def test_tiny_model_size_and_files(tiny_model_dir):
    spec = json.loads((Path(tiny_model_dir) / "tiny_spec.json").read_text())
    assert 1e6 <= spec["num_params"] <= 5e6
    assert spec["hidden"] // spec["heads"] >= 32
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json"):
        assert (Path(tiny_model_dir) / name).exists(), name


def _token_ids(node, path=""):
    """Every `*_token_id(s)` in a config dict, with its dotted path."""
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _token_ids(value, f"{path}{key}.")
        elif key.endswith(("_token_id", "_token_ids")) and value is not None:
            yield from ((f"{path}{key}", v) for v in (value if isinstance(value, list) else [value]))


def test_tiny_config_token_ids_lie_inside_the_vocabulary(tiny_model_dir):
    """The factory writes no out-of-range special-token id (on disk and as transformers loads it),
    and loading it raises none of transformers' "within the vocabulary" warnings (escalated to
    errors here); the one about transformers' own default Idefics3 config is filtered by
    `policies.quirks`, and only that one."""
    import logging

    from transformers import AutoConfig

    vocab = json.loads((Path(tiny_model_dir) / "config.json").read_text())["text_config"]["vocab_size"]
    ids = dict(_token_ids(json.loads((Path(tiny_model_dir) / "config.json").read_text())))
    assert ids and all(0 <= v < vocab for v in ids.values()), ids

    class Escalate(logging.Handler):
        def emit(self, record):
            if "within the vocabulary" in record.getMessage():
                raise AssertionError(record.getMessage())

    logger = logging.getLogger("transformers.configuration_utils")
    handler = Escalate()
    logger.addHandler(handler)
    try:
        config = AutoConfig.from_pretrained(tiny_model_dir)
        repr(config)  # transformers' repr builds the class default, whose warning is filtered
        for sub in (config, config.text_config):
            sub.validate_token_ids()
        bad = AutoConfig.from_pretrained(tiny_model_dir, pad_token_id=vocab + 5)
        with pytest.raises(AssertionError, match=f"got {vocab + 5}"):
            bad.text_config.pad_token_id = vocab + 5
            bad.validate_token_ids()  # a real out-of-range id still warns
    finally:
        logger.removeHandler(handler)


def test_loading_the_tiny_model_prints_no_token_id_warning(tiny_model_dir):
    """The issue's reproduction: a fresh process that loads the tiny model through `policies`."""
    import subprocess
    import sys

    code = ("from policies.loading import PolicyConfig, load_model; "
            f"load_model({tiny_model_dir!r}, PolicyConfig())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "within the vocabulary" not in proc.stderr + proc.stdout


def test_tiny_model_is_deterministic(tmp_path):
    from policies.tiny import build_tiny_model

    corpus = ["a red circle", "a blue square", "yes", "no"] * 30

    def digest(folder):
        return {
            f: hashlib.sha256((folder / f).read_bytes()).hexdigest()
            for f in ("model.safetensors", "tokenizer.json")
        }

    a = digest(build_tiny_model(tmp_path / "a", seed=1, corpus=corpus))
    b = digest(build_tiny_model(tmp_path / "b", seed=1, corpus=corpus))
    c = digest(build_tiny_model(tmp_path / "c", seed=2, corpus=corpus))
    assert a == b
    assert a["model.safetensors"] != c["model.safetensors"]


def test_chat_template_modes(policy):
    _, processor = policy
    deep = render_prompt(processor, QUESTION, "deep", num_images=1)
    fast = render_prompt(processor, QUESTION, "fast", num_images=1)
    assert fast.endswith(FAST_PREFILL) and not deep.endswith(FAST_PREFILL)
    assert fast == deep + FAST_PREFILL
    assert deep.endswith("<|im_start|>assistant\n") and "<think>" not in deep
    assert deep.count("<image>") == 1


def test_image_tokens_line_up_with_processor(policy):
    _, processor = policy
    text = render_prompt(processor, QUESTION, "fast", num_images=2)
    images = [_image(), _image((30, 30, 200))]
    ids = [int(t) for t in processor(text=[text], images=[images])["input_ids"][0]]
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert sum(1 for t in ids if t == image_id) == 2 * processor.image_seq_len == 32
    expansion = MediaExpansion.probe(processor, images)
    assert [len(e) for _, e in expansion.items] == [19, 19]  # fake, global-img, 16 x image, fake
    assert expansion.collapse(ids + [7]) == processor.tokenizer(text, add_special_tokens=False)["input_ids"] + [7]
    with pytest.raises(ValueError, match="found 1 of 2 media expansions"):
        expansion.collapse(ids[: ids.index(image_id) + 19 + 5])  # cut inside the second image
    banned = {processor.tokenizer.convert_ids_to_tokens(t) for t in banned_media_tokens(processor)}
    assert banned == {"<image>", "<fake_token_around_image>", "<global-img>"}


def test_multimodal_messages_checks_counts():
    msgs = to_multimodal_messages(QUESTION, 1)
    assert msgs[0]["content"][0] == {"type": "image"}
    with pytest.raises(ValueError, match="2 images"):
        to_multimodal_messages([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}], 2)


def test_vision_tower_frozen_and_lora(tiny_model_dir):
    model, _, _ = load_policy(PolicyConfig(name_or_path=tiny_model_dir))
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all("vision_model" in n for n in frozen)
    cfg = PolicyConfig(name_or_path=tiny_model_dir)
    cfg.lora.enabled = True
    lora_model, _, _ = load_policy(cfg)
    trainable = [n for n, p in lora_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("vision_model" in n for n in trainable)


def test_missing_model_path_is_named(tmp_path):
    with pytest.raises(PolicyError, match="does not exist"):
        resolve_model_path(PolicyConfig(name_or_path=str(tmp_path / "nope")), tmp_path)


@pytest.mark.vllm
def test_hf_and_vllm_prompt_logprobs_agree(policy, vllm_llm):
    """Same image+text sequence: transformers and vLLM give the same log-probs (fp32)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    model, processor = policy
    img = _image()
    text = render_prompt(processor, QUESTION, "deep", num_images=1) + "<think>a red circle</think>\n\nred"
    ids = [int(t) for t in processor(text=[text], images=[[img]])["input_ids"][0]]
    collapsed = MediaExpansion.probe(processor, [img]).collapse(ids)
    out = vllm_llm.generate(
        [TokensPrompt(prompt_token_ids=collapsed, multi_modal_data={"image": img})],
        SamplingParams(max_tokens=1, prompt_logprobs=0),
        use_tqdm=False,
    )[0]
    assert list(out.prompt_token_ids) == ids  # vLLM re-expanded the image exactly as the processor
    start = ids.index(processor.tokenizer.convert_tokens_to_ids("<image>")) + 18  # everything after the image
    v = [out.prompt_logprobs[i][ids[i]].logprob for i in range(start, len(ids))]
    hf = HFScorer(model, processor).score([ScoreRequest(ids, [img], start)])[0].logprobs
    diff = max(abs(a - b) for a, b in zip(v, hf, strict=True))
    assert diff <= 1e-4, diff
    assert len(v) == len(ids) - start > 5
    assert torch.isfinite(torch.tensor(hf)).all()
