"""Image-token layout of a processor: expand/collapse image placeholders in token-id sequences.

Processors expand each image placeholder of the chat template into many tokens (Idefics3:
`<fake_token_around_image><global-img><image>×N<fake_token_around_image>`). The trainer and the
rollouts work with expanded ids (what the model sees). vLLM, given token ids plus an image,
expands placeholders itself, so expanded sequences are collapsed back before they are sent.
The layout is learned from the processor with a probe image, so it holds for any family whose
expansion is `prefix + image_token×N + suffix` around a placeholder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ImageTokenLayout:
    image_token_id: int
    placeholder_ids: tuple[int, ...]  # the unexpanded placeholder as the tokenizer encodes it
    prefix_ids: tuple[int, ...]  # expanded form: prefix + [image]*N + suffix
    suffix_ids: tuple[int, ...]

    @classmethod
    def from_processor(cls, processor: Any) -> ImageTokenLayout:
        from PIL import Image

        tok = processor.tokenizer
        placeholder = getattr(processor, "image_token", None) or "<image>"
        image_id = tok.convert_tokens_to_ids(placeholder)
        unexpanded = tok(placeholder, add_special_tokens=False)["input_ids"]
        probe = Image.new("RGB", (64, 64), (128, 128, 128))
        expanded = processor(text=[placeholder], images=[[probe]], add_special_tokens=False)["input_ids"][0]
        expanded = [int(t) for t in expanded]
        first = expanded.index(image_id)
        last = len(expanded) - 1 - expanded[::-1].index(image_id)
        return cls(image_id, tuple(unexpanded), tuple(expanded[:first]), tuple(expanded[last + 1 :]))

    @property
    def banned_in_completions(self) -> list[int]:
        """Image-placeholder tokens a completion must never contain: each one would ask the
        trainer's forward for an image feature that does not exist ("image features and image
        tokens do not match")."""
        return sorted({self.image_token_id, *self.placeholder_ids, *self.prefix_ids, *self.suffix_ids})

    def collapse(self, ids: list[int]) -> tuple[list[int], list[tuple[int, int]]]:
        """Replace each expanded image span by the placeholder.

        Returns the collapsed ids and, per span, (start in the expanded ids, tokens removed),
        so callers can map expanded positions to collapsed ones.
        """
        out: list[int] = []
        spans: list[tuple[int, int]] = []
        pre, suf, img = list(self.prefix_ids), list(self.suffix_ids), self.image_token_id
        i, n = 0, len(ids)
        while i < n:
            if ids[i : i + len(pre)] == pre and i + len(pre) < n and ids[i + len(pre)] == img:
                j = i + len(pre)
                while j < n and ids[j] == img:
                    j += 1
                if ids[j : j + len(suf)] == suf:
                    end = j + len(suf)
                    out.extend(self.placeholder_ids)
                    spans.append((i, (end - i) - len(self.placeholder_ids)))
                    i = end
                    continue
            out.append(ids[i])
            i += 1
        return out, spans

    def collapsed_position(self, pos: int, spans: list[tuple[int, int]]) -> int:
        """Map a position of the expanded ids (after all image spans) to the collapsed ids."""
        return pos - sum(removed for start, removed in spans if start < pos)
