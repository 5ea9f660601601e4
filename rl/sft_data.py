"""Warm-up SFT data: both thinking modes built from the train split, as TRL prompt-completion text.

Each train row gives up to two examples (the cold start of the MiniCPM-V 4.5 recipe):

* deep: the prompt rendered in deep mode (ends at the assistant header); the completion is
  `<think>` + reasoning + `</think>\\n\\n` + answer + eos;
* fast: the prompt rendered in fast mode, so it ends with the pre-filled empty think block
  (`policies.chat.FAST_PREFILL`); the completion is answer + eos.

The columns are non-conversational `prompt`/`completion` *text* plus the row's `images` and
`videos`, the shape TRL's `DataCollatorForVisionLanguageModeling` (with videos added:
`rl.media_collators.MediaSFTCollator`) handles on its prompt-completion path with
completion-only loss: the pre-filled block sits in the prompt and is never a trained token, the
same split the rollout engines see at generation time. The eos token is written into the
completion here because `SFTTrainer` skips its own dataset preparation (and eos appending) for
vision datasets. Every task of the split is kept, including yes/no existence questions and
descriptions (the policy later labels RLAIF-V claims with yes/no). Extra columns (`id`, `mode`,
`task`, `qtype`) are for inspection; the trainer drops them before collation.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from policies.chat import MODES, THINK_CLOSE, THINK_OPEN, render_prompt

if TYPE_CHECKING:  # `datasets` is imported where used: rl.config imports this module's defaults
    import datasets

DEFAULT_HARD_QTYPES: tuple[str, ...] = ("relation", "count")
SFT_COLUMNS: tuple[str, ...] = ("id", "mode", "task", "qtype", "prompt", "completion", "images", "videos")
_TEXT_COLUMNS = ("id", "prompt", "task", "qtype", "answer", "reasoning")


def deep_completion(reasoning: str, answer: str, eos: str) -> str:
    """The trained text of a deep example: think block, then the answer, then eos."""
    return f"{THINK_OPEN}{reasoning.strip()}{THINK_CLOSE}\n\n{answer}{eos}"


def fast_completion(answer: str, eos: str) -> str:
    """The trained text of a fast example: the answer only (the empty think block is prompt)."""
    return f"{answer}{eos}"


def sft_example(processor: Any, row: dict[str, Any], mode: str, eos: str, num_images: int = 1,
                num_videos: int = 0) -> dict[str, str]:
    """Prompt text (generation prompt in `mode` with the row's media) and completion text of one row."""
    prompt = render_prompt(processor, list(row["prompt"]), mode, num_images, num_videos)
    if mode == "deep":
        completion = deep_completion(row.get("reasoning") or "", row["answer"], eos)
    else:
        completion = fast_completion(row["answer"], eos)
    return {"prompt": prompt, "completion": completion}


def eos_token_of(processor: Any) -> str:
    """The eos token text of a processor's tokenizer (or of a bare tokenizer)."""
    tok = getattr(processor, "tokenizer", processor)
    if not tok.eos_token:
        raise ValueError("the tokenizer has no eos token; SFT completions must end with one")
    return tok.eos_token


def plan_examples(
    rows: Sequence[dict[str, Any]],
    mode_mix: float | None = None,
    hard_qtypes: Sequence[str] = DEFAULT_HARD_QTYPES,
    hard_weight: int = 2,
    max_examples: int = 0,
    seed: int = 0,
) -> list[tuple[int, str]]:
    """Choose `(row index, mode)` pairs: the SFT example list before rendering.

    `mode_mix=None` gives every row both modes; a number in [0, 1] gives each row one example,
    deep with that probability. Rows whose `qtype` is in `hard_qtypes` appear `hard_weight`
    times (with the same mode choice rule per copy). The list is shuffled with `seed` and cut
    to `max_examples` (0 = no cap).
    """
    if mode_mix is not None and not 0.0 <= mode_mix <= 1.0:
        raise ValueError(f"mode_mix must be None or in [0, 1], got {mode_mix}")
    if hard_weight < 1:
        raise ValueError(f"hard_weight must be >= 1, got {hard_weight}")
    rng = random.Random(f"warmup-sft/{seed}")
    hard = set(hard_qtypes)
    plan: list[tuple[int, str]] = []
    for i, row in enumerate(rows):
        copies = hard_weight if row.get("qtype") in hard else 1
        for _ in range(copies):
            if mode_mix is None:
                plan += [(i, mode) for mode in MODES]
            else:
                plan.append((i, "deep" if rng.random() < mode_mix else "fast"))
    rng.shuffle(plan)
    return plan[:max_examples] if max_examples > 0 else plan


def sft_features() -> datasets.Features:
    """Column types of the SFT dataset: text columns plus the media columns of the canonical schema."""
    import datasets

    from rl.data.shapes import FEATURES

    media = {"images": FEATURES["images"], "videos": FEATURES["videos"]}
    return datasets.Features({name: media.get(name, datasets.Value("string")) for name in SFT_COLUMNS})


def build_sft_dataset(
    processor: Any,
    train: datasets.Dataset,
    mode_mix: float | None = None,
    hard_qtypes: Sequence[str] = DEFAULT_HARD_QTYPES,
    hard_weight: int = 2,
    max_examples: int = 0,
    seed: int = 0,
) -> datasets.Dataset:
    """The warm-up SFT dataset (columns `SFT_COLUMNS`) from a canonical-schema train split.

    Images are carried over undecoded (bytes or path), so building is cheap; they are decoded
    again when the collator reads a batch.
    """
    import datasets

    from rl.data.rows import undecoded_media

    missing = [c for c in _TEXT_COLUMNS if c not in train.column_names]
    if missing:
        raise ValueError(f"train split lacks column(s) {missing}; SFT needs {list(_TEXT_COLUMNS)}")
    text_rows = train.select_columns(list(_TEXT_COLUMNS)).to_list()
    images, videos = undecoded_media(train)
    plan = plan_examples(text_rows, mode_mix, hard_qtypes, hard_weight, max_examples, seed)
    eos = eos_token_of(processor)
    rendered: dict[tuple[int, str], dict[str, str]] = {}
    columns: dict[str, list[Any]] = {name: [] for name in SFT_COLUMNS}
    for i, mode in plan:
        row = text_rows[i]
        if (i, mode) not in rendered:  # up-weighted copies share one rendering
            rendered[i, mode] = sft_example(processor, row, mode, eos, len(images[i]), len(videos[i]))
        example = rendered[i, mode]
        columns["id"].append(f"{row['id']}-{mode}")
        columns["mode"].append(mode)
        columns["task"].append(row["task"])
        columns["qtype"].append(row["qtype"] or "")
        columns["prompt"].append(example["prompt"])
        columns["completion"].append(example["completion"])
        columns["images"].append(images[i])
        columns["videos"].append(videos[i])
    return datasets.Dataset.from_dict(columns, features=sft_features())


def add_lengths(processor: Any, dataset: datasets.Dataset, column: str = "length") -> datasets.Dataset:
    """The dataset with a `column` of text-token counts (prompt + completion) per example.

    Media tokens are not counted: on the Shapes data every example holds one image (the same count
    on each row), so the text count orders examples as the full count would.
    """
    tok = getattr(processor, "tokenizer", processor)
    prompts = tok(list(dataset["prompt"]), add_special_tokens=False)["input_ids"]
    completions = tok(list(dataset["completion"]), add_special_tokens=False)["input_ids"]
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions, strict=True)]
    return dataset.add_column(column, lengths)


def summarize(dataset: datasets.Dataset) -> dict[str, Any]:
    """Example counts by mode and by qtype (for logs and metrics)."""
    by_mode: dict[str, int] = {}
    by_qtype: dict[str, int] = {}
    for mode, qtype in zip(dataset["mode"], dataset["qtype"], strict=True):
        by_mode[mode] = by_mode.get(mode, 0) + 1
        by_qtype[qtype] = by_qtype.get(qtype, 0) + 1
    return {"examples": len(dataset), "by_mode": by_mode, "by_qtype": by_qtype}
