"""Media placeholders in token ids: expanded (what the model sees) vs collapsed (what vLLM expands).

A processor replaces each media placeholder of the prompt text (Idefics3 `<image>`, Qwen
`<|image_pad|>` / `<|video_pad|>`, MiniCPM-V `<|image_pad|>`) by a run of tokens that can depend
on the item (its size, its index: MiniCPM-V writes `<image_id>k</image_id>` before image k; a
Qwen3-VL video carries its frame timestamps as text). The trainer and the rollouts work with
expanded ids; vLLM, given token ids plus media, expands placeholders itself, so a scored sequence
is collapsed back before it is sent. The expansions are learned from the processor on the
request's own media (`MediaExpansion.probe`), so no family-specific pattern is assumed.

Placeholders are assumed in the order the chat renderer puts them (`policies.chat`): the images,
then the videos.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from policies.media import processor_inputs

# Special tokens whose text holds one of these words mark media (`<|vision_start|>`, `<slice>`, ...).
_MEDIA_WORDS = ("image", "video", "vision", "slice", "img")


def _ids(tokenizer: Any, text: str) -> list[int]:
    return [int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]


def _separator(tokenizer: Any) -> str:
    """A special token that no media expansion contains (it splits the probe into items)."""
    for name in ("eos_token", "pad_token", "bos_token"):
        token = getattr(tokenizer, name, None)
        if token:
            return token
    raise ValueError("the tokenizer has no eos, pad or bos token to separate media placeholders with")


@dataclass(frozen=True)
class MediaExpansion:
    """Per media item of one prompt, in order: (placeholder ids, expanded ids)."""

    items: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]

    @classmethod
    def probe(cls, processor: Any, images: list[Any], videos: list[Any] = ()) -> MediaExpansion:
        tok = processor.tokenizer
        image = getattr(processor, "image_token", None) or "<image>"
        video = getattr(processor, "video_token", None) or "<video>"
        placeholders = [image] * len(images) + [video] * len(videos)
        if not placeholders:
            return cls(())
        sep = _separator(tok)
        text = sep.join(placeholders)
        expanded = processor(text=[text], **processor_inputs([list(images)], [list(videos)]),
                             add_special_tokens=False)["input_ids"][0]
        expanded = [int(t) for t in expanded]
        sep_id = _ids(tok, sep)
        if len(sep_id) != 1:
            raise ValueError(f"separator {sep!r} is not one token")
        parts: list[list[int]] = [[]]
        for t in expanded:
            if t == sep_id[0]:
                parts.append([])
            else:
                parts[-1].append(t)
        if len(parts) != len(placeholders):
            raise ValueError(f"probe split into {len(parts)} parts for {len(placeholders)} media items")
        return cls(tuple((tuple(_ids(tok, p)), tuple(e)) for p, e in zip(placeholders, parts, strict=True)))

    def collapse(self, ids: list[int]) -> list[int]:
        """`ids` with each item's expansion replaced by its placeholder (items matched in order).

        Raises ValueError when an item's expansion is not found: the ids were not made from these
        media, and vLLM would expand them differently."""
        out: list[int] = []
        i, j, n = 0, 0, len(ids)
        while i < n:
            if j < len(self.items):
                placeholder, expanded = self.items[j]
                if ids[i : i + len(expanded)] == list(expanded):
                    out.extend(placeholder)
                    i += len(expanded)
                    j += 1
                    continue
            out.append(ids[i])
            i += 1
        if j != len(self.items):
            raise ValueError(f"found {j} of {len(self.items)} media expansions in the token ids")
        return out


BANNED_LOGIT_BIAS = -100.0  # added to the logits of banned tokens: by the engines, and by the trainer when it scores


def banned_media_tokens(processor: Any, with_video: bool = False) -> list[int]:
    """Special tokens of the media markup, which a completion must never contain: each would ask the
    trainer's forward for a media feature that does not exist ("image features and image tokens do
    not match"). Found in a probe expansion and among the special tokens named after media
    (image, video, vision, slice, img); ordinary text tokens inside an expansion (MiniCPM-V's image-id digits) are allowed."""
    from PIL import Image

    tok = processor.tokenizer
    special = set(getattr(tok, "all_special_ids", [])) | set(getattr(tok, "added_tokens_decoder", {}))
    probe_image = Image.new("RGB", (64, 64), (128, 128, 128))
    videos = []
    if with_video:
        from rollouts.types import Video

        videos = [Video([probe_image] * 2, 1.0)]
    found: set[int] = set()
    for placeholder, expanded in MediaExpansion.probe(processor, [probe_image], videos).items:
        found |= set(placeholder) | set(expanded)
    for token_id in special:
        text = tok.convert_ids_to_tokens(int(token_id))
        if isinstance(text, str) and any(w in text.lower() for w in _MEDIA_WORDS):
            found.add(int(token_id))
    return sorted(t for t in found if t in special)
