"""TRL's vision collators for SFT and DPO, taught videos.

TRL 1.16's `DataCollatorForVisionLanguageModeling` (SFT) and `DataCollatorForVisionPreference`
(DPO) call the processor once on the prompts with their images, then on the completions; they
pass no videos. These subclasses leave every batch without videos to TRL untouched (the same
tensors, bit for bit) and, for a batch with videos, hand the processor the videos (with their
metadata) on that same prompt call, so prompt ids, pixel tensors and per-token type ids
(`mm_token_type_ids` for M-RoPE) come out of one processor call as TRL expects. Examples carry a
`videos` column ({"frames": [PIL], "fps"} per video, the canonical schema's layout).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from trl.trainer.dpo_trainer import DataCollatorForVisionPreference
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from policies.media import processor_inputs
from rl.data.rows import row_videos

VIDEO_COLUMN = "videos"


class _WithVideos:
    """The processor, with a batch's videos added to the call that carries the prompts' images."""

    def __init__(self, processor: Any, videos: dict[str, Any]):
        self._processor = processor
        self._videos = videos

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if "images" in kwargs:  # TRL's prompt call (completion calls pass text only)
            kwargs.update(self._videos)
        return self._processor(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._processor, name)


@contextmanager
def _videos_of(collator: Any, examples: list[dict[str, Any]], repeat: int):
    """Swap in the video-adding processor for one batch (prompts repeated `repeat` times)."""
    videos = [row_videos(ex) for ex in examples]
    for ex in examples:
        ex.pop(VIDEO_COLUMN, None)
    if not any(videos):
        yield
        return
    original = collator.processor
    collator.processor = _WithVideos(original, processor_inputs([[]] * (len(videos) * repeat), videos * repeat))
    try:
        yield
    finally:
        collator.processor = original


@dataclass
class MediaSFTCollator(DataCollatorForVisionLanguageModeling):
    """TRL's SFT vision collator with videos (see the module docstring)."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        with _videos_of(self, examples, repeat=1):
            return super().torch_call(examples)


@dataclass
class MediaPreferenceCollator(DataCollatorForVisionPreference):
    """TRL's DPO vision collator with videos (chosen and rejected share the prompt's videos)."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        with _videos_of(self, examples, repeat=2):
            return super().torch_call(examples)


def with_videos(collator: Any) -> Any:
    """The same collator (every field kept) as its video-aware subclass; other collators unchanged.

    Trainers build their collator from their config (max length, completion-only loss, padding);
    converting it afterwards keeps all of that."""
    from dataclasses import fields

    for base, ours in ((DataCollatorForVisionLanguageModeling, MediaSFTCollator),
                       (DataCollatorForVisionPreference, MediaPreferenceCollator)):
        if type(collator) is base:
            return ours(**{f.name: getattr(collator, f.name) for f in fields(collator) if f.init})
    return collator
