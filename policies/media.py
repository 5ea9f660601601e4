"""Images and videos of a prompt in the three shapes the pipeline hands them on: to a processor,
to vLLM, and to a model forward over prompt + completion ids.

One code path for every family: a processor is always called on the prompt text with its media
(it knows its own pixel layout: Idefics3's padded image stacks, Qwen's patch rows with
`image_grid_thw`, MiniCPM-V's slices with `target_sizes`), and the per-token type ids some models
need for M-RoPE (`mm_token_type_ids`, `token_type_ids`) are rebuilt over the whole sequence from
the token ids, since they mark media tokens only. Videos are `rollouts.types.Video` (frames plus
fps) and reach processors and vLLM with transformers' video metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rollouts.types import Video

# Per-token fields of processor outputs (same length as input_ids); everything else that is not
# text (pixel tensors, grids, sizes, timestamps) is a media field for the forward pass.
TEXT_KEYS = ("input_ids", "attention_mask")
TYPE_ID_KEYS = ("mm_token_type_ids", "token_type_ids")


def processor_inputs(images: Sequence[Sequence[Any]], videos: Sequence[Sequence[Video]] = ()) -> dict[str, Any]:
    """Keyword arguments for `processor(text=[...], ...)` of a batch: `images` nested per sample,
    `videos` flat in order of appearance with their metadata; absent keys when the batch has none."""
    out: dict[str, Any] = {}
    if any(len(x) for x in images):
        out["images"] = [[im.convert("RGB") for im in sample] for sample in images]
    flat = [v for sample in videos for v in sample]
    if flat:
        out["videos"] = [v.array() for v in flat]
        out["video_metadata"] = [v.metadata() for v in flat]
    return out


def vllm_media(images: Sequence[Any], videos: Sequence[Video] = ()) -> dict[str, Any]:
    """vLLM's `multi_modal_data` of one prompt (empty when it has no media)."""
    data: dict[str, Any] = {}
    if images:
        rgb = [im.convert("RGB") for im in images]
        data["image"] = rgb[0] if len(rgb) == 1 else rgb
    if videos:
        clips = [(v.array(), v.metadata()) for v in videos]
        data["video"] = clips[0] if len(clips) == 1 else clips
    return data


def media_counts(images: Sequence[Any], videos: Sequence[Any] = ()) -> dict[str, int]:
    return {"image": len(images), "video": len(videos)}


def _type_map(batch: Any, key: str) -> dict[int, int]:
    """Token id -> type id of the media tokens in a processor output (types are 0 elsewhere)."""
    mapping: dict[int, int] = {}
    for ids, types in zip(batch["input_ids"].tolist(), batch[key].tolist(), strict=True):
        for token, kind in zip(ids, types, strict=True):
            if kind:
                mapping[int(token)] = int(kind)
    return mapping


def placeholder_text(processor: Any, num_images: int, num_videos: int = 0) -> str:
    """The bare media placeholders of one prompt, as the processor expands them (no chat text)."""
    image = getattr(processor, "image_token", None) or "<image>"
    video = getattr(processor, "video_token", None) or "<video>"
    return image * num_images + video * num_videos


def forward_media(processor: Any, images: Sequence[Sequence[Any]], videos: Sequence[Sequence[Video]],
                  input_ids: Any) -> dict[str, Any]:
    """Media keyword arguments of a model forward over `input_ids` [B, L] (any padding): row i holds
    a prompt with `images[i]` and `videos[i]` (placeholders already expanded) and any completion.

    Returns {} for a batch without media. Pixel tensors do not depend on the text around the
    placeholders, so the processor runs on the bare placeholders of each row; type-id fields are
    mapped over `input_ids` (text, completion tokens and padding get 0).
    """
    import torch

    kwargs = processor_inputs(images, videos)
    if not kwargs:
        return {}
    texts = [placeholder_text(processor, len(i), len(v)) for i, v in zip(images, videos or [[]] * len(images), strict=True)]
    batch = processor(text=texts, padding=True, return_tensors="pt", add_special_tokens=False, **kwargs)
    out = {k: v for k, v in batch.items() if k not in TEXT_KEYS and k not in TYPE_ID_KEYS}
    for key in TYPE_ID_KEYS:
        if key in batch:
            types = torch.zeros_like(input_ids)
            for token, kind in _type_map(batch, key).items():
                types[input_ids == token] = kind
            out[key] = types
    device = input_ids.device
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in out.items()}
