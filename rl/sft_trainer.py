"""The warm-up's TRL `SFTTrainer` subclass: a separate learning rate for the image path, batches of
similar length, videos.

Three things plain `SFTTrainer` cannot do from its config for a vision dataset:

* **Vision learning-rate scale.** The optimizer gets the vision tower and the connector (the
  image path) in their own parameter groups at `learning_rate × vision_lr_scale`; the scheduler
  scales every group by the same factor per step, so the ratio holds for the whole run.
* **Length grouping.** transformers' `LengthGroupedSampler` needs a length per example, but the
  trainer drops every column outside its vision signature (`prompt`, `completion`, `image`, …)
  before the sampler reads them. The subclass keeps the dataset's `length` column (written by
  `rl.sft_data.add_lengths`); the collator ignores it.
* **Videos.** The `videos` column is kept too and TRL's collator is converted to
  `rl.media_collators.MediaSFTCollator`, which hands video prompts' frames to the processor.
"""

from __future__ import annotations

from typing import Any

from trl import SFTTrainer

from policies.loading import is_vision_param
from rl.media_collators import VIDEO_COLUMN, with_videos

LENGTH_COLUMN = "length"
# Parameter-name pieces of the module that maps vision features into the language model.
CONNECTOR_PATTERNS = ("connector", "multi_modal_projector", "mm_projector", "resampler")


def is_image_path_param(name: str) -> bool:
    """True for parameters of the vision tower or of the vision-to-language connector."""
    return is_vision_param(name) or any(p in name for p in CONNECTOR_PATTERNS)


def split_param_groups(groups: list[dict[str, Any]], names: dict[int, str], lr: float, scale: float) -> list[dict[str, Any]]:
    """Each optimizer group split in two: its image-path parameters at `lr * scale`, the rest as they were.

    `names` maps `id(param)` to the parameter's name. Empty groups are left out; every other
    group key (weight decay, …) is kept on both halves.
    """
    out: list[dict[str, Any]] = []
    for group in groups:
        image = [p for p in group["params"] if is_image_path_param(names.get(id(p), ""))]
        rest = [p for p in group["params"] if not is_image_path_param(names.get(id(p), ""))]
        if rest:
            out.append({**group, "params": rest})
        if image:
            out.append({**group, "params": image, "lr": lr * scale})
    return out


class WarmupSFTTrainer(SFTTrainer):
    """`SFTTrainer` with `vision_lr_scale` and a kept `length` column (see the module docstring)."""

    def __init__(self, *args: Any, vision_lr_scale: float = 1.0, **kwargs: Any):
        self.vision_lr_scale = float(vision_lr_scale)
        super().__init__(*args, **kwargs)
        self.data_collator = with_videos(self.data_collator)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        extra = [c for c in (LENGTH_COLUMN, VIDEO_COLUMN) if c not in self._signature_columns]
        self._signature_columns = [*self._signature_columns, *extra]

    def create_optimizer(self, model: Any = None) -> Any:
        had_optimizer = self.optimizer is not None
        optimizer = super().create_optimizer(model)
        if had_optimizer or self.vision_lr_scale == 1.0:
            return optimizer
        opt_model = self.model if model is None else model
        names = {id(p): n for n, p in opt_model.named_parameters()}
        split = split_param_groups(optimizer.param_groups, names, self.args.learning_rate, self.vision_lr_scale)
        optimizer.param_groups.clear()  # no step taken yet: no optimizer state to carry over
        for group in split:
            optimizer.add_param_group(group)
        return optimizer
