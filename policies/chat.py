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


def to_multimodal_messages(messages: list[dict[str, Any]], num_images: int, num_videos: int = 0) -> list[dict[str, Any]]:
    """Return messages whose content is a list of blocks, with image and video blocks placed.

    String contents become `[{"type": "text", "text": ...}]`. If no message has media blocks yet,
    `num_images` `{"type": "image"}` blocks and then `num_videos` `{"type": "video"}` blocks are put
    at the start of the first user turn (TRL's convention). Embedded PIL objects or frames in media
    blocks are dropped: media travel apart.
    """
    out: list[dict[str, Any]] = []
    have = {"image": 0, "video": 0}
    for msg in messages:
        content = msg.get("content", "")
        if isinstance(content, str):
            blocks = [{"type": "text", "text": content}]
        else:
            blocks = []
            for block in content:
                kind = block.get("type")
                if kind in have:
                    have[kind] += 1
                    blocks.append({"type": kind})
                elif kind == "text":
                    blocks.append({"type": "text", "text": block.get("text") or ""})
        out.append({"role": msg["role"], "content": blocks})
    want = {"image": num_images, "video": num_videos}
    if not any(have.values()) and any(want.values()):
        for msg in out:
            if msg["role"] == "user":
                media = [{"type": "image"}] * num_images + [{"type": "video"}] * num_videos
                msg["content"] = [dict(b) for b in media] + msg["content"]
                break
        else:
            raise ValueError("messages have no user turn to attach the image(s) or video(s) to")
    elif have != want:
        raise ValueError(f"messages hold {have['image']} image and {have['video']} video blocks but "
                         f"{num_images} images and {num_videos} videos were given")
    return out


def render_prompt(processor: Any, messages: list[dict[str, Any]], mode: str, num_images: int = 0,
                  num_videos: int = 0) -> str:
    """Render the generation prompt text of `messages` in thinking `mode`.

    Works with any processor/tokenizer whose chat template honours `enable_thinking`; for
    templates that ignore it, fast mode appends `FAST_PREFILL` itself so the switch still holds.
    """
    check_mode(mode)
    msgs = to_multimodal_messages(messages, num_images, num_videos)
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


def encode_prompt(processor: Any, messages: list[dict[str, Any]], images: list[Any], mode: str,
                  videos: list[Any] = ()) -> list[int]:
    """Token ids of the generation prompt in `mode`, media placeholders expanded as the model sees them
    (`videos`: `rollouts.types.Video` items)."""
    from policies.media import processor_inputs

    text = render_prompt(processor, messages, mode, len(images), len(videos))
    batch = processor(text=[text], **processor_inputs([list(images)], [list(videos)]), add_special_tokens=False)
    return [int(t) for t in batch["input_ids"][0]]
