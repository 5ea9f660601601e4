"""Chat rendering with the per-prompt thinking switch (Qwen3 convention).

deep: the generation prompt ends at the assistant header; the model writes `<think>…</think>`
      and then the answer.
fast: the generation prompt pre-fills an empty think block (`FAST_PREFILL`), so the model
      answers directly. The pre-filled block is context, never a trained completion token.
"""

from __future__ import annotations

from typing import Any

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
FAST_PREFILL = f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n"
MODES = ("deep", "fast")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be 'deep' or 'fast', got {mode!r}")
    return mode


def to_multimodal_messages(messages: list[dict[str, Any]], num_images: int) -> list[dict[str, Any]]:
    """Return messages whose content is a list of blocks, with image blocks placed.

    String contents become `[{"type": "text", "text": ...}]`. If no message has an image block
    yet, `num_images` `{"type": "image"}` blocks are put at the start of the first user turn
    (TRL's convention). Embedded PIL objects in image blocks are dropped: images travel apart.
    """
    out: list[dict[str, Any]] = []
    have_images = 0
    for msg in messages:
        content = msg.get("content", "")
        if isinstance(content, str):
            blocks = [{"type": "text", "text": content}]
        else:
            blocks = []
            for block in content:
                kind = block.get("type")
                if kind == "image":
                    have_images += 1
                    blocks.append({"type": "image"})
                elif kind == "text":
                    blocks.append({"type": "text", "text": block.get("text") or ""})
        out.append({"role": msg["role"], "content": blocks})
    if have_images == 0 and num_images > 0:
        for msg in out:
            if msg["role"] == "user":
                msg["content"] = [{"type": "image"} for _ in range(num_images)] + msg["content"]
                break
        else:
            raise ValueError("messages have no user turn to attach the image(s) to")
    elif have_images != num_images:
        raise ValueError(f"messages hold {have_images} image blocks but {num_images} images were given")
    return out


def render_prompt(processor: Any, messages: list[dict[str, Any]], mode: str, num_images: int = 0) -> str:
    """Render the generation prompt text of `messages` in thinking `mode`.

    Works with any processor/tokenizer whose chat template honours `enable_thinking`; for
    templates that ignore it, fast mode appends `FAST_PREFILL` itself so the switch still holds.
    """
    check_mode(mode)
    msgs = to_multimodal_messages(messages, num_images)
    text = processor.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True, enable_thinking=(mode == "deep")
    )
    if mode == "fast" and not text.endswith(FAST_PREFILL):
        text += FAST_PREFILL
    return text


def split_completion(text: str) -> tuple[str | None, str]:
    """Split a completion into (think content or None, answer text), tolerant of junk."""
    if THINK_CLOSE in text:
        head, _, answer = text.partition(THINK_CLOSE)
        think = head.split(THINK_OPEN, 1)[1] if THINK_OPEN in head else head
        return think, answer
    return None, text


def encode_prompt(processor: Any, messages: list[dict[str, Any]], images: list[Any], mode: str) -> list[int]:
    """Token ids of the generation prompt in `mode`, image placeholders expanded as the model sees them."""
    text = render_prompt(processor, messages, mode, len(images))
    batch = processor(text=[text], images=[list(images)] if images else None, add_special_tokens=False)
    return [int(t) for t in batch["input_ids"][0]]
