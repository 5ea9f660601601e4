"""What every tiny-model family shares: the locally trained tokenizer, the chat template with the
thinking switch, the spec of a size preset and the writing of the model folder.

A family module (`policies/tiny/<family>.py`) supplies its special tokens, its config and its
processor; `write_model_dir` does the rest, the same way for all of them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


def chat_template(image: str, video: str = "") -> str:
    """A chat template that renders `{"type": "image"}` / `{"type": "video"}` blocks as the family's
    placeholders and honours `enable_thinking` the Qwen3 way (false pre-fills an empty think block).

    Rendered with explicit "\\n" strings so Jinja whitespace handling cannot change the prompt.
    """
    video_branch = f"{{%- elif block['type'] == 'video' %}}{{{{ '{video}' }}}}" if video else ""
    return (
        "{%- for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' }}"
        "{%- if message['content'] is string %}{{ message['content'] }}"
        "{%- else %}{%- for block in message['content'] %}"
        f"{{%- if block['type'] == 'image' %}}{{{{ '{image}' }}}}"
        f"{video_branch}"
        "{%- elif block['type'] == 'text' %}{{ block['text'] }}{%- endif %}"
        "{%- endfor %}{%- endif %}"
        "{{ '<|im_end|>\\n' }}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
        "{%- if enable_thinking is defined and enable_thinking is false %}"
        "{{ '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
        "{%- endif %}"
    )


def train_tokenizer(texts: list[str], vocab_size: int, special_tokens: list[str], template: str,
                    pad: str, eos: str, bos: str, extra_special_tokens: dict[str, str]):
    """Train a byte-level BPE tokenizer on `texts` with `special_tokens` first; a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=pad,
        eos_token=eos,
        bos_token=bos,
        extra_special_tokens=extra_special_tokens,
        chat_template=template,
        model_max_length=2048,
    )


def tokenizer_corpus(corpus: list[str] | None) -> list[str]:
    """The Shapes texts (unless given) plus the chat template's role names, so "user"/"assistant"
    become single tokens."""
    if corpus is None:
        from rl.data.shapes import corpus_text

        corpus = corpus_text()
    return list(corpus) + ["user\n", "assistant\n", "system\n"] * 200


@dataclass(frozen=True)
class TextSpec:
    """The language model of a size preset (head_dim must be >= 32 for vLLM's CPU attention)."""

    vocab_size: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    max_positions: int = 4096

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def write_model_dir(out: Path, model: Any, processor: Any, tokenizer: Any, meta: dict[str, Any]) -> Path:
    """Save model, processor and tokenizer in Hugging Face format plus `tiny_spec.json` (the
    marker that the folder is complete: written last)."""
    from transformers import GenerationConfig

    text = model.config.get_text_config()
    model.generation_config = GenerationConfig(
        eos_token_id=text.eos_token_id if text.eos_token_id is not None else tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta = {**meta, "num_params": sum(p.numel() for p in model.parameters())}
    (out / "tiny_spec.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def spec_dict(spec: Any) -> dict[str, Any]:
    return asdict(spec)
