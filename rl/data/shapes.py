"""The embedded "Shapes" dataset: procedurally drawn scenes with checkable questions.

Each image is a 2x2 grid holding 1-4 coloured shapes (one per cell, jittered inside it, no two
sharing a colour and shape, so a phrase like "red circle" names exactly one object). One
generator yields three task types, which together exercise every reward of the pipeline:

* `short`       - rule-checkable short answers: perception qtypes (colour / count / shape /
                  relation / exists) and, when `short_qtypes` names them, compositional qtypes
                  (`COMPOSE_QTYPES`: count of a colour or a shape, "more X than Y", the colour of
                  a neighbour) that a model can answer from an object inventory by reasoning;
* `freeform`    - a reference phrase for RLPR's probability reward (qtype `where`);
* `description` - a reference description plus the ground-truth object list (qtype `describe`),
                  used by the RLAIF-V rounds and the hallucination metrics.

With `compare_share` / `motion_share` > 0 a split also gets `short` rows with two images
(qtype `compare`) and with a video (qtype `motion`): `rl.data.shapes_media`. Scenes and pixels
live in `rl.data.scenes`, the questions in `rl.data.shapes_questions`.

`make_shapes` returns a `datasets.DatasetDict` in the canonical schema (`FEATURES`) that the user
loader (`rl.data.loader`) also produces: `train`, `heldout` and, when `num_rl_images` > 0, `rl`
(fresh scenes for the RL stage, never seen by the warm-up). Held-out scenes are drawn first, from
their own stream, so they do not change with the train or RL sizes; train and RL scenes that
collide with a held-out scene are redrawn. Everything is deterministic in its arguments.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from pathlib import Path

import datasets
import pyarrow.parquet as pq

from rl.data.config import TASKS, ShapesConfig
from rl.data.scenes import COLOURS, SHAPES, SYNONYMS, Scene, png_bytes, random_scene, render
from rl.data.shapes_questions import SHORT_QTYPES, caption_extra, make_question, questions_for

_MAX_REDRAW_ATTEMPTS = 1000
VIDEO = {"frames": datasets.List(datasets.Image()), "fps": datasets.Value("float32")}

FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "image_id": datasets.Value("string"),
        "images": datasets.List(datasets.Image()),  # the prompt's images, in order (0 or more)
        "videos": datasets.List(VIDEO),  # the prompt's videos (sampled frames with their fps)
        "question": datasets.Value("string"),
        "prompt": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "task": datasets.Value("string"),
        "qtype": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "reasoning": datasets.Value("string"),
        "objects": datasets.List(datasets.Value("string")),
        "scene": datasets.Value("string"),
    }
)




# ----------------------------------------------------------------------------- datasets


def _image_rng(seed: int, split: str, index: int, attempt: int) -> random.Random:
    # A string seed is hashed with SHA-512 by `random`, so it is stable across runs and
    # processes; one stream per image keeps a split's prefix fixed when counts change.
    return random.Random(f"shapes/{seed}/{split}/{index}/{attempt}")


def _min_objects(weights: Mapping[str, float]) -> int:
    # With only freeform questions enabled, one-object scenes would have nothing to ask.
    return 1 if any(w > 0 for t, w in weights.items() if t != "freeform") else 2


def _split_rows(
    split: str, scenes: list[tuple[Scene, bytes, random.Random]], cfg: ShapesConfig
) -> dict[str, list]:
    rows: dict[str, list] = {name: [] for name in FEATURES}
    extras = cfg.caption_extras if split == "train" else 0.0
    for index, (scene, image, rng) in enumerate(scenes):
        image_id = f"{split}-{index:05d}"
        for j, q in enumerate(questions_for(scene, rng, cfg)):
            if q["task"] == "description" and extras:  # its own stream: the other draws stay as they were
                q = {**q, "answer": caption_extra(scene, random.Random(f"extras/{cfg.seed}/{image_id}/{j}"), extras)[0]}
            rows["id"].append(f"{image_id}-{j}")
            rows["image_id"].append(image_id)
            rows["images"].append([{"bytes": image, "path": None}])
            rows["videos"].append([])
            rows["prompt"].append([{"role": "user", "content": q["question"]}])
            rows["objects"].append(scene.names)
            rows["scene"].append(scene.to_json())
            for key in ("question", "task", "qtype", "answer", "reasoning"):
                rows[key].append(q[key])
    return rows


def _media_rows(split: str, num_images: int, cfg: ShapesConfig) -> dict[str, list]:
    """The two-image and video rows of a split (`rl.data.shapes_media`), in the canonical schema."""
    from rl.data.shapes_media import compare_row, motion_row

    made = [compare_row(cfg.seed, split, i, cfg.image_size) for i in range(round(num_images * cfg.compare_share))]
    made += [motion_row(cfg.seed, split, i, cfg.image_size, cfg.video_frames, cfg.video_fps)
             for i in range(round(num_images * cfg.motion_share))]
    rows: dict[str, list] = {name: [] for name in FEATURES}
    for row in made:
        rows["id"].append(f"{row['image_id']}-0")
        rows["prompt"].append([{"role": "user", "content": row["question"]}])
        rows["task"].append("short")
        rows["images"].append([{"bytes": b, "path": None} for b in row["images"]])
        rows["videos"].append([{"frames": [{"bytes": b, "path": None} for b in v["frames"]], "fps": v["fps"]}
                               for v in row["videos"]])
        for key in ("image_id", "question", "qtype", "answer", "reasoning", "objects", "scene"):
            rows[key].append(row[key])
    return rows


def make_shapes(
    num_train_images: int = 600,
    num_heldout_images: int = 100,
    questions_per_image: int = 2,
    image_size: int = 64,
    seed: int = 0,
    task_weights: Mapping[str, float] | None = None,
    short_qtypes: tuple[str, ...] | list[str] | None = None,
    num_rl_images: int = 0,
    reasoning: str = "inventory",
    exists_reasoning: str = "lookup",
    compare_share: float = 0.0,
    motion_share: float = 0.0,
    video_frames: int = 4,
    video_fps: float = 2.0,
    caption_extras: float = 0.0,
) -> datasets.DatasetDict:
    """Generate the Shapes dataset: splits `train`, `heldout` and (when `num_rl_images` > 0) `rl`.

    Held-out scenes come from their own random stream and depend only on the seed and their own
    index, so changing the train or RL size never changes the held-out questions. A train or RL
    candidate whose scene signature or PNG hash matches a held-out image is redrawn; RL scenes are
    also kept apart from train scenes (fresh images the warm-up never saw). Two-image and video
    rows (`compare_share`, `motion_share`: per image of the split) follow a split's single-image
    rows. Equal arguments give byte-identical datasets.
    """
    cfg = ShapesConfig(
        num_train_images=num_train_images,
        num_heldout_images=num_heldout_images,
        questions_per_image=questions_per_image,
        image_size=image_size,
        seed=seed,
        task_weights=dict(task_weights) if task_weights is not None else ShapesConfig().task_weights,
        short_qtypes=list(short_qtypes) if short_qtypes is not None else list(SHORT_QTYPES),
        num_rl_images=num_rl_images,
        reasoning=reasoning,
        exists_reasoning=exists_reasoning,
        compare_share=compare_share,
        motion_share=motion_share,
        video_frames=video_frames,
        video_fps=video_fps,
        caption_extras=caption_extras,
    )
    cfg.validate()
    min_objects = _min_objects(cfg.task_weights)

    def draw(split: str, index: int, attempt: int) -> tuple[Scene, bytes, random.Random]:
        rng = _image_rng(seed, split, index, attempt)
        scene = random_scene(rng, image_size, min_objects)
        return scene, png_bytes(render(scene)), rng

    heldout = [draw("heldout", i, 0) for i in range(num_heldout_images)]
    seen_sigs = {scene.signature() for scene, _, _ in heldout}
    seen_hashes = {hashlib.sha256(img).hexdigest() for _, img, _ in heldout}

    def draw_apart(split: str, index: int) -> tuple[Scene, bytes, random.Random]:
        for attempt in range(_MAX_REDRAW_ATTEMPTS):
            scene, img, rng = draw(split, index, attempt)
            if scene.signature() not in seen_sigs and hashlib.sha256(img).hexdigest() not in seen_hashes:
                return scene, img, rng
        raise RuntimeError(
            f"could not draw {split} image {index} unlike all {len(seen_sigs)} images already drawn; "
            "use fewer held-out (or RL) images"
        )

    train = [draw_apart("train", i) for i in range(num_train_images)]
    splits = {"train": train, "heldout": heldout}
    if num_rl_images:
        # Keep RL scenes apart from train scenes too (the warm-up memorises its images).
        seen_sigs |= {scene.signature() for scene, _, _ in train}
        seen_hashes |= {hashlib.sha256(img).hexdigest() for _, img, _ in train}
        splits["rl"] = [draw_apart("rl", i) for i in range(num_rl_images)]
    out = {}
    for split, scenes in splits.items():
        rows = _split_rows(split, scenes, cfg)
        for name, values in _media_rows(split, len(scenes), cfg).items():
            rows[name].extend(values)
        out[split] = datasets.Dataset.from_dict(rows, features=FEATURES)
    return datasets.DatasetDict(out)


def description_rows(split: str, num_images: int, cfg: ShapesConfig, avoid: set[tuple]) -> datasets.Dataset:
    """"Describe the image." rows (canonical schema, task `description`) about `num_images` fresh
    scenes of their own random stream `split` (e.g. one per RLAIF-V round), skipping any scene
    whose signature is in `avoid` (the held-out, train and RL scenes). Clean reference answers."""
    min_objects = _min_objects(cfg.task_weights)
    rows: dict[str, list] = {name: [] for name in FEATURES}
    for index in range(num_images):
        for attempt in range(_MAX_REDRAW_ATTEMPTS):
            rng = _image_rng(cfg.seed, split, index, attempt)
            scene = random_scene(rng, cfg.image_size, min_objects)
            if scene.signature() not in avoid:
                break
        else:
            raise RuntimeError(f"could not draw {split} image {index} unlike the {len(avoid)} scenes to avoid")
        q = make_question(scene, "description", rng)
        image_id = f"{split}-{index:05d}"
        values = {"id": f"{image_id}-0", "image_id": image_id, "images": [{"bytes": png_bytes(render(scene)), "path": None}],
                  "videos": [], "prompt": [{"role": "user", "content": q["question"]}], "objects": scene.names,
                  "scene": scene.to_json(), **{k: q[k] for k in ("question", "task", "qtype", "answer", "reasoning")}}
        for name in FEATURES:
            rows[name].append(values[name])
    return datasets.Dataset.from_dict(rows, features=FEATURES)


def empty_dataset() -> datasets.Dataset:
    """A zero-row dataset in the canonical schema (e.g. when there is no eval split)."""
    return datasets.Dataset.from_dict({name: [] for name in FEATURES}, features=FEATURES)


def save_parquet(dsdict: datasets.DatasetDict, folder: str | Path) -> list[Path]:
    """Write one `<split>.parquet` per split into `folder` (images as embedded bytes)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, ds in dsdict.items():
        path = folder / f"{split}.parquet"
        ds.to_parquet(str(path))
        paths.append(path)
    return paths


def load_parquet(folder: str | Path) -> datasets.DatasetDict:
    """Read back what `save_parquet` wrote: each `*.parquet` in `folder` becomes a split."""
    folder = Path(folder)
    # "train" first so the DatasetDict reads in the usual order.
    files = sorted(folder.glob("*.parquet"), key=lambda p: (p.stem != "train", p.stem))
    if not files:
        raise FileNotFoundError(f"no .parquet files in {folder}")
    out = {}
    for path in files:
        table = pq.read_table(path)
        # Parquet written by `datasets` carries its Features in the schema metadata; the
        # in-memory table avoids copying the file into the datasets cache.
        features = datasets.Features.from_arrow_schema(table.schema)
        out[path.stem] = datasets.Dataset(
            datasets.table.InMemoryTable(table), info=datasets.DatasetInfo(features=features)
        )
    return datasets.DatasetDict(out)


def corpus_text(n: int = 2000, seed: int = 0) -> list[str]:
    """Texts for training a tokenizer: a fixed vocabulary part, then `n` generated texts
    (questions, answers, reasoning, descriptions) from random scenes."""
    texts = ["yes", "no", "Yes", "No", *(str(d) for d in range(10))]
    texts += [w for words in SYNONYMS.values() for w in words]
    colour_words = [w for c in COLOURS for w in SYNONYMS[c]]
    shape_words = [w for s in SHAPES for w in SYNONYMS[s]]
    texts += [f"a {c} {s}" for c in colour_words for s in shape_words]
    rng = random.Random(f"shapes-corpus/{seed}")
    generated: list[str] = []
    while len(generated) < n:
        scene = random_scene(rng)
        # Perception qtypes only: the tokenizer (and so every tiny model built from it) stays the
        # one the tests and earlier results used; compositional questions reuse the same words.
        for task in TASKS:
            q = make_question(scene, task, rng)
            if q:
                generated += [q["question"], q["answer"], q["reasoning"]]
    return texts + generated[:n]
