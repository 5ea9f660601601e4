"""Config dataclasses of the data component: the embedded Shapes generator and the user loader.

`DataConfig` is the `data:` section of the top-level config. It imports nothing heavy, so the
config tree can be built and validated without `datasets` or PIL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Literal

from rl.configlib import FieldError

# The three task types of the canonical schema; rewards dispatch on them.
TASKS: tuple[str, ...] = ("short", "freeform", "description")
# Question types of the `short` task in the Shapes generator (rl.data.shapes has their questions).
PERCEPTION_QTYPES: tuple[str, ...] = ("colour", "count", "shape", "relation", "exists")
COMPOSE_QTYPES: tuple[str, ...] = ("colour_count", "size_count", "shape_count", "more", "colour_more", "neighbour")


def _default_task_weights() -> dict[str, float]:
    return {"short": 0.6, "freeform": 0.2, "description": 0.2}


@dataclass
class ShapesConfig:
    """Arguments of `rl.data.shapes.make_shapes` (the embedded procedurally generated set)."""

    num_train_images: int = 600
    num_heldout_images: int = 100
    questions_per_image: int = 2
    image_size: int = 64
    seed: int = 0
    # Relative frequency of each task; a missing task counts as weight 0.
    task_weights: dict[str, float] = field(default_factory=_default_task_weights)
    # Question types a `short` question is drawn from (uniformly, among those a scene supports):
    # the perception types by default; add the compositional ones (`rl.data.shapes.COMPOSE_QTYPES`:
    # colour_count, size_count, shape_count, more, colour_more, neighbour) for a task that reasoning
    # over the inventory solves.
    short_qtypes: list[str] = field(default_factory=lambda: list(PERCEPTION_QTYPES))
    # Fresh scenes for the RL stage (split `rl`, disjoint from train and held-out); 0 = none, the
    # RL stage then samples its prompts from the train split.
    num_rl_images: int = 0
    # Style of the reasoning text deep mode is taught: "inventory" opens with the objects seen,
    # cell by cell; "tally" adds the count of every colour and shape after it, so a count of a
    # kind or a "more X than Y" answer can be read off the reasoning (rl.data.shapes._tally).
    reasoning: Literal["inventory", "tally"] = "inventory"
    # How deep mode checks an existence question ("Is there a yellow circle?") after the
    # inventory: "lookup" names the object or says "None of them is a yellow circle." (one step:
    # match a colour-shape pair against the whole list); "filter" first lists the colours of the
    # asked shape, then compares one colour locally ("The circles are red and blue, so there is no
    # yellow circle."). Same questions and answers either way. Measured (text only, tiny LM, 500
    # steps, `python -m rl.text_pretrain --steps 500 --qtypes exists [--exists-reasoning filter]`):
    # answered right from a gold inventory 0.68 with "lookup", 0.83 with "filter".
    exists_reasoning: Literal["lookup", "filter"] = "lookup"
    # Extra `short` rows with two images ("Which image has more circles, the first or the
    # second?") and with a video ("Which way does the red circle move?": `video_frames` frames at
    # `video_fps`), as a share of each split's image count (`rl.data.shapes_media`). 0 = none;
    # the single-image rows are the same with or without them.
    compare_share: float = 0.0
    motion_share: float = 0.0
    video_frames: int = 4
    video_fps: float = 2.0
    # Language-prior hallucination in the train split's reference descriptions (what real SFT
    # captions carry): each object has a companion it is "usually seen with" (`rl.data.scenes.
    # companion`); when a train scene holds an object whose companion is absent and a cell is free,
    # its description mentions the companion there with this probability. Held-out and RL
    # references stay clean; yes/no questions are always clean. 0 = no extras.
    caption_extras: float = 0.0

    def validate(self) -> None:
        for name in ("num_train_images", "num_heldout_images", "num_rl_images"):
            if getattr(self, name) < 0:
                raise FieldError(name, f"must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.caption_extras <= 1.0:
            raise FieldError("caption_extras", f"must be a probability in [0, 1], got {self.caption_extras!r}")
        if self.num_train_images + self.num_heldout_images == 0:
            raise FieldError("num_train_images", "the dataset would be empty (both counts are 0)")
        if self.questions_per_image < 1:
            raise FieldError("questions_per_image", f"must be >= 1, got {self.questions_per_image}")
        # Below 32 px the small shapes shrink to a few pixels and stop being recognisable.
        if not 32 <= self.image_size <= 1024:
            raise FieldError("image_size", f"must be between 32 and 1024, got {self.image_size}")
        unknown = [k for k in self.task_weights if k not in TASKS]
        if unknown:
            raise FieldError("task_weights", f"unknown task {unknown[0]!r}; valid tasks: {', '.join(TASKS)}")
        for task, weight in self.task_weights.items():
            if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
                raise FieldError(f"task_weights.{task}", f"must be a number >= 0, got {weight!r}")
        if sum(self.task_weights.values()) <= 0:
            raise FieldError("task_weights", "at least one task needs a positive weight")
        for name in ("compare_share", "motion_share"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise FieldError(name, f"must be a number >= 0 (rows per image of a split), got {value!r}")
        if self.video_frames < 2:
            raise FieldError("video_frames", f"a motion needs at least 2 frames, got {self.video_frames}")
        if not (self.video_fps > 0 and math.isfinite(self.video_fps)):
            raise FieldError("video_fps", f"must be a positive number, got {self.video_fps}")
        if self.reasoning not in ("inventory", "tally"):
            raise FieldError("reasoning", f"{self.reasoning!r} is not 'inventory' or 'tally'")
        if self.exists_reasoning not in ("lookup", "filter"):
            raise FieldError("exists_reasoning", f"{self.exists_reasoning!r} is not 'lookup' or 'filter'")
        known = PERCEPTION_QTYPES + COMPOSE_QTYPES
        if not self.short_qtypes:
            raise FieldError("short_qtypes", f"name at least one of {', '.join(known)}")
        for i, qtype in enumerate(self.short_qtypes):
            if qtype not in known:
                raise FieldError(f"short_qtypes[{i}]", f"unknown qtype {qtype!r}; valid: {', '.join(known)}")


@dataclass
class ColumnMap:
    """Canonical field -> the user's column name. `None` marks an optional field as absent.

    `question`, `image` and `answer` are required (the question may instead come from `prompt`);
    a missing `task` column falls back to `DataConfig.default_task`.
    """

    question: str = "question"
    prompt: str | None = None  # conversational column: list of {"role", "content"} messages
    image: str = "image"  # one image or a list of images per row (a multi-image prompt)
    video: str | None = None  # a video per row: a file path, a list of frames or {"frames", "fps"}
    answer: str = "answer"
    task: str = "task"
    qtype: str | None = None
    objects: str | None = None

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and not value.strip():
                raise FieldError(f.name, "must be a column name, not an empty string")


@dataclass
class DataConfig:
    """Where the training/eval prompts come from and how user columns map onto the schema."""

    # "shapes" = embedded generator; a .parquet/.jsonl/.json file or a folder of them;
    # anything else is a Hugging Face hub dataset name.
    source: str = "shapes"
    train_split: str = "train"
    eval_split: str = "heldout"  # "" = no evaluation split
    columns: ColumnMap = field(default_factory=ColumnMap)
    default_task: str = "short"
    image_root: str = ""  # base folder for relative image and video paths ("" = the data file's folder)
    # Video files are decoded (OpenCV) into this many frames at even spacing; a video given as a
    # list of frames without an fps is taken to run at `video_fps`.
    video_frames: int = 8
    video_fps: float = 2.0
    on_bad_row: Literal["error", "skip"] = "error"
    max_train: int | None = None
    max_eval: int | None = None
    shapes: ShapesConfig = field(default_factory=ShapesConfig)

    def validate(self) -> None:
        if not self.source.strip():
            raise FieldError("source", "must be 'shapes', a local path or a hub dataset name")
        if not self.train_split.strip():
            raise FieldError("train_split", "must name a split (e.g. 'train')")
        if self.default_task not in TASKS:
            raise FieldError("default_task", f"{self.default_task!r} is not one of {', '.join(TASKS)}")
        if self.on_bad_row not in ("error", "skip"):
            raise FieldError("on_bad_row", f"{self.on_bad_row!r} is not 'error' or 'skip'")
        if self.video_frames < 2:
            raise FieldError("video_frames", f"must be at least 2, got {self.video_frames}")
        if not (self.video_fps > 0 and math.isfinite(self.video_fps)):
            raise FieldError("video_fps", f"must be a positive number, got {self.video_fps}")
        for name in ("max_train", "max_eval"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise FieldError(name, f"must be >= 0 or null, got {value}")
        # Nested sections are validated by from_dict as they are built; repeat here for configs
        # constructed directly in code, keeping the dotted key in the message.
        for section in ("columns", "shapes"):
            try:
                getattr(self, section).validate()
            except FieldError as exc:
                raise FieldError(f"{section}.{exc.field}", exc.message) from None
