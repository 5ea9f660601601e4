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

`make_shapes` returns a `datasets.DatasetDict` in the canonical schema (`FEATURES`) that the user
loader (`rl.data.loader`) also produces: `train`, `heldout` and, when `num_rl_images` > 0, `rl`
(fresh scenes for the RL stage, never seen by the warm-up). Held-out scenes are drawn first, from
their own stream, so they do not change with the train or RL sizes; train and RL scenes that
collide with a held-out scene are redrawn. Everything is deterministic in its arguments.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from rl.data.config import PERCEPTION_QTYPES, TASKS, ShapesConfig

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple")
# Saturated, far-apart RGB values so a pixel check (and a tiny vision tower) separates them.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (30, 70, 220),
    "yellow": (240, 200, 20),
    "purple": (140, 50, 180),
}
SIZES: tuple[str, ...] = ("small", "large")
BACKGROUND: tuple[int, int, int] = (245, 245, 240)
# Canonical word -> words a model may use for it (the canonical word first); hallucination
# metrics map a response's words back through this table.
SYNONYMS: dict[str, list[str]] = {
    "circle": ["circle", "ball", "dot", "disc", "disk"],
    "square": ["square", "box", "rectangle"],
    "triangle": ["triangle"],
    "red": ["red"],
    "green": ["green"],
    "blue": ["blue"],
    "yellow": ["yellow"],
    "purple": ["purple", "violet"],
}
SHORT_QTYPES: tuple[str, ...] = PERCEPTION_QTYPES  # the default `short_qtypes`
# Neighbour directions in the 2x2 grid for the compositional `neighbour` question: (row, col) offset.
NEIGHBOUR_STEPS: dict[str, tuple[int, int]] = {"right": (0, 1), "left": (0, -1), "below": (1, 0), "above": (-1, 0)}
CELLS: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (1, 0), (1, 1))
CELL_NAMES: dict[tuple[int, int], str] = {
    (0, 0): "top left",
    (0, 1): "top right",
    (1, 0): "bottom left",
    (1, 1): "bottom right",
}
# Question wording of each relation word (a relative to b).
RELATION_PHRASES: dict[str, str] = {
    "left": "to the left of",
    "right": "to the right of",
    "above": "above",
    "below": "below",
}
# Object-count distribution: single-object scenes are few (there are only 120 distinct ones, so
# the held-out split would mostly collide with train), and relations need two or more.
_COUNT_WEIGHTS = {1: 0.15, 2: 0.3, 3: 0.3, 4: 0.25}
_SIZE_FRACTION = {"small": 0.44, "large": 0.72}  # side of the shape / side of its cell
_MAX_REDRAW_ATTEMPTS = 1000

FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "image_id": datasets.Value("string"),
        "image": datasets.Image(),
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


@dataclass(frozen=True)
class SceneObject:
    """One drawn shape; `box` is (x0, y0, x1, y1) in pixels, inclusive."""

    shape: str
    colour: str
    size: str
    cell: tuple[int, int]  # (row, col) in the 2x2 grid
    box: tuple[int, int, int, int]

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def position(self) -> str:
        return CELL_NAMES[self.cell]

    @property
    def centre(self) -> tuple[int, int]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) // 2, (y0 + y1) // 2


@dataclass(frozen=True)
class Scene:
    """A whole image: objects in reading order of their cells."""

    objects: tuple[SceneObject, ...]
    image_size: int = 64

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objects]

    def find(self, name: str) -> SceneObject | None:
        return next((o for o in self.objects if o.name == name), None)

    def signature(self) -> tuple:
        """Symbolic content without pixel jitter: two scenes with the same signature show the
        same objects in the same cells, which counts as the same image for split disjointness."""
        return tuple(sorted((o.cell, o.colour, o.shape, o.size) for o in self.objects))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Scene:
        data = json.loads(text)
        objects = tuple(
            SceneObject(o["shape"], o["colour"], o["size"], tuple(o["cell"]), tuple(o["box"]))
            for o in data["objects"]
        )
        return cls(objects=objects, image_size=int(data["image_size"]))


# ----------------------------------------------------------------------------- scenes and pixels


def relations(a: SceneObject, b: SceneObject) -> set[str]:
    """Relation words that hold for `a` relative to `b` (a diagonal pair gets two)."""
    out = set()
    (ra, ca), (rb, cb) = a.cell, b.cell
    if ca != cb:
        out.add("left" if ca < cb else "right")
    if ra != rb:
        out.add("above" if ra < rb else "below")
    return out


def where_phrase(a: SceneObject, b: SceneObject) -> str:
    """Reference phrase for "where is a relative to b", e.g. "above and to the left of the blue square"."""
    rel = relations(a, b)
    vertical = next((r for r in ("above", "below") if r in rel), None)
    horizontal = next((RELATION_PHRASES[r] for r in ("left", "right") if r in rel), None)
    parts = [p for p in (vertical, horizontal) if p]
    return f"{' and '.join(parts)} the {b.name}"


def random_scene(rng: random.Random, image_size: int = 64, min_objects: int = 1) -> Scene:
    """Draw a scene: distinct cells, distinct (colour, shape) pairs, jitter inside each cell."""
    counts = [n for n in _COUNT_WEIGHTS if n >= min_objects]
    n = rng.choices(counts, weights=[_COUNT_WEIGHTS[c] for c in counts])[0]
    cells = sorted(rng.sample(CELLS, n))
    kinds = rng.sample([(c, s) for c in COLOURS for s in SHAPES], n)
    cell_px = image_size // 2
    pad = max(1, cell_px // 16)  # keeps shapes in neighbouring cells from touching
    objects = []
    for (row, col), (colour, shape) in zip(cells, kinds, strict=True):
        size = rng.choice(SIZES)
        side = max(6, round(cell_px * _SIZE_FRACTION[size]))
        free = max(0, cell_px - side - 2 * pad)
        x0 = col * cell_px + pad + rng.randint(0, free)
        y0 = row * cell_px + pad + rng.randint(0, free)
        box = (x0, y0, x0 + side - 1, y0 + side - 1)
        objects.append(SceneObject(shape, colour, size, (row, col), box))
    return Scene(objects=tuple(objects), image_size=image_size)


def render(scene: Scene, image_size: int | None = None) -> Image.Image:
    """Draw `scene` as an RGB image (no anti-aliasing, so object pixels carry the exact colour).

    `image_size` defaults to the size the scene was laid out for; another size rescales it.
    """
    size = image_size or scene.image_size
    scale = size / scene.image_size
    img = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for obj in scene.objects:
        x0, y0, x1, y1 = (round(v * scale) for v in obj.box)
        fill = COLOUR_RGB[obj.colour]
        if obj.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:  # apex up; the box centre lies inside at half width
            draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    return img


def png_bytes(img: Image.Image) -> bytes:
    """Encode as PNG; PIL writes no timestamps, so equal pixels give equal bytes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- questions


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _inventory(scene: Scene) -> str:
    """What a careful model sees, cell by cell: "I see a large red circle at the top left and ..."."""
    seen = [f"a {o.size} {o.name} at the {o.position}" for o in scene.objects]
    return f"I see {_listing(seen)}."


def _tally(scene: Scene) -> str:
    """Counts of the colours and shapes present, in a fixed order: "That is 2 red and 1 blue; 1
    circle and 2 squares." A count of a kind (0 when it is not named) or a comparison can be read
    off it; colours and shapes not present are left out to keep deep mode's reasoning short."""
    colours = [f"{n} {c}" for c in COLOURS if (n := sum(o.colour == c for o in scene.objects))]
    shapes = [_plural(n, s) for s in SHAPES if (n := sum(o.shape == s for o in scene.objects))]
    return f"That is {_listing(colours)}; {_listing(shapes)}."


def _opening(scene: Scene, reasoning: str) -> str:
    """Opening of every short and free-form reasoning text, in the `reasoning` style
    (`ShapesConfig.reasoning`): the inventory, and in style `tally` the counts after it."""
    return _inventory(scene) if reasoning == "inventory" else f"{_inventory(scene)} {_tally(scene)}"


def describe(scene: Scene) -> str:
    """Reference description, e.g. "There is a red circle at the top left and a blue square ..."."""
    return f"There is {_listing([f'a {o.name} at the {o.position}' for o in scene.objects])}."


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _q_colour(scene: Scene, rng: random.Random) -> tuple[str, str, str] | None:
    unique = [o for o in scene.objects if sum(p.shape == o.shape for p in scene.objects) == 1]
    if not unique:
        return None
    o = rng.choice(unique)
    reasoning = f"There is only one {o.shape}, and it is {o.colour}."
    return f"What colour is the {o.shape}?", o.colour, reasoning


def _q_count(scene: Scene, rng: random.Random) -> tuple[str, str, str]:
    n = len(scene.objects)
    reasoning = f"That makes {_plural(n, 'shape')} in total."
    return "How many shapes are there?", str(n), reasoning


def _q_shape(scene: Scene, rng: random.Random) -> tuple[str, str, str] | None:
    unique = [o for o in scene.objects if sum(p.colour == o.colour for p in scene.objects) == 1]
    if not unique:
        return None
    o = rng.choice(unique)
    reasoning = f"The only {o.colour} object is the {o.shape}."
    return f"What shape is the {o.colour} object?", o.shape, reasoning


def _q_relation(scene: Scene, rng: random.Random) -> tuple[str, str, str] | None:
    if len(scene.objects) < 2:
        return None
    a, b = rng.sample(scene.objects, 2)
    true = relations(a, b)
    # Half yes, half no: otherwise "yes" alone would earn most of the reward.
    want_yes = rng.random() < 0.5
    pool = sorted(true) if want_yes else sorted(set(RELATION_PHRASES) - true)
    rel = rng.choice(pool)
    phrase = f"{RELATION_PHRASES[rel]} the {b.name}"
    verdict = f"it is {phrase}" if rel in true else f"it is not {phrase}"
    reasoning = (
        f"The {a.name} is at the {a.position} and the {b.name} is at the "
        f"{b.position}, so the {a.name} is {where_phrase(a, b)}. That means {verdict}."
    )
    return f"Is the {a.name} {phrase}?", "yes" if rel in true else "no", reasoning


def _q_exists(scene: Scene, rng: random.Random) -> tuple[str, str, str]:
    if rng.random() < 0.5:
        o = rng.choice(scene.objects)
        reasoning = f"The {o.name} is at the {o.position}."
        return f"Is there a {o.name}?", "yes", reasoning
    present = {(o.colour, o.shape) for o in scene.objects}
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    # A plausible distractor shares its colour or its shape with something in the picture.
    plausible = [(c, s) for c, s in absent if any(c == pc or s == ps for pc, ps in present)]
    colour, shape = rng.choice(plausible or absent)
    reasoning = f"None of them is a {colour} {shape}."
    return f"Is there a {colour} {shape}?", "no", reasoning


def _q_where(scene: Scene, rng: random.Random) -> tuple[str, str, str] | None:
    if len(scene.objects) < 2:
        return None
    a, b = rng.sample(scene.objects, 2)
    reasoning = (
        f"The {a.name} is at the {a.position} and the {b.name} is at the {b.position}."
    )
    return f"Where is the {a.name} relative to the {b.name}?", where_phrase(a, b), reasoning


def _q_describe(scene: Scene, rng: random.Random) -> tuple[str, str, str]:
    n = len(scene.objects)
    details = " ".join(f"The {o.name} is {o.size} and sits at the {o.position}." for o in scene.objects)
    reasoning = f"I count {_plural(n, 'shape')}. {details}"
    return "Describe the image.", describe(scene), reasoning


def _balanced_pick(rng: random.Random, counts: dict[str, int]) -> str:
    """A key of `counts` whose count is drawn uniformly from the distinct counts on offer, so that
    no single answer (e.g. "1") earns most of the reward; ties broken at random."""
    k = rng.choice(sorted(set(counts.values())))
    return rng.choice(sorted(name for name, n in counts.items() if n == k))


def _q_colour_count(scene: Scene, rng: random.Random) -> tuple[str, str, str]:
    counts = {c: sum(o.colour == c for o in scene.objects) for c in COLOURS}
    colour = _balanced_pick(rng, counts)
    n = counts[colour]
    reasoning = f"Of these, {n} {'is' if n == 1 else 'are'} {colour}."
    return f"How many {colour} shapes are there?", str(n), reasoning


def _q_shape_count(scene: Scene, rng: random.Random) -> tuple[str, str, str]:
    counts = {s: sum(o.shape == s for o in scene.objects) for s in SHAPES}
    shape = _balanced_pick(rng, counts)
    reasoning = f"That makes {_plural(counts[shape], shape)}."
    return f"How many {shape}s are there?", str(counts[shape]), reasoning


def _q_more(scene: Scene, rng: random.Random) -> tuple[str, str, str] | None:
    counts = {s: sum(o.shape == s for o in scene.objects) for s in SHAPES}
    pairs = [(a, b) for a in SHAPES for b in SHAPES if a != b and counts[a] != counts[b]]
    if not pairs:
        return None
    # Half yes, half no: otherwise one word would earn most of the reward.
    want_yes = rng.random() < 0.5
    pool = [(a, b) for a, b in pairs if (counts[a] > counts[b]) == want_yes] or pairs
    a, b = rng.choice(pool)
    yes = counts[a] > counts[b]
    reasoning = (f"That makes {_plural(counts[a], a)} and {_plural(counts[b], b)}, "
                 f"so there are {'more' if yes else 'fewer'} {a}s than {b}s.")
    return f"Are there more {a}s than {b}s?", "yes" if yes else "no", reasoning


def _q_neighbour(scene: Scene, rng: random.Random) -> tuple[str, str, str] | None:
    by_cell = {o.cell: o for o in scene.objects}
    options = []
    for o in scene.objects:
        for word, (dr, dc) in NEIGHBOUR_STEPS.items():
            other = by_cell.get((o.cell[0] + dr, o.cell[1] + dc))
            if other is not None:
                options.append((o, word, other))
    if not options:
        return None
    o, word, other = rng.choice(options)
    phrase = RELATION_PHRASES[word]
    reasoning = (f"The {o.name} is at the {o.position}; the shape {phrase} it is the "
                 f"{other.name} at the {other.position}.")
    return f"What colour is the shape {phrase} the {o.name}?", other.colour, reasoning


_SHORT = {
    "colour": _q_colour,
    "count": _q_count,
    "shape": _q_shape,
    "relation": _q_relation,
    "exists": _q_exists,
    "colour_count": _q_colour_count,
    "shape_count": _q_shape_count,
    "more": _q_more,
    "neighbour": _q_neighbour,
}


def make_question(
    scene: Scene,
    task: str,
    rng: random.Random,
    short_qtypes: tuple[str, ...] | list[str] = SHORT_QTYPES,
    reasoning: str = "inventory",
) -> dict[str, str] | None:
    """One question of `task` about `scene` (None when the scene cannot support it); a `short`
    question draws its qtype uniformly from `short_qtypes` among those the scene supports.
    `reasoning` is the style of the reasoning text (`ShapesConfig.reasoning`)."""
    if task == "short":
        order = list(short_qtypes)
        rng.shuffle(order)
        made = None
        for qtype in order:  # colour/shape/relation need a suitable scene; count/exists always fit
            made = _SHORT[qtype](scene, rng)
            if made:
                break
    elif task == "freeform":
        qtype, made = "where", _q_where(scene, rng)
    elif task == "description":
        qtype, made = "describe", _q_describe(scene, rng)
    else:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    if made is None:
        return None
    question, answer, text = made
    if qtype != "describe":  # the description's reasoning is a per-object walk of its own
        text = f"{_opening(scene, reasoning)} {text}"
    return {"task": task, "qtype": qtype, "question": question, "answer": answer, "reasoning": text}


def _questions_for(scene: Scene, rng: random.Random, cfg: ShapesConfig) -> list[dict]:
    """`k` questions for one image, tasks drawn by weight, avoiding repeats where possible."""
    weights = cfg.task_weights
    tasks = [t for t in TASKS if weights.get(t, 0) > 0]
    out: list[dict] = []
    asked: set[str] = set()
    for _ in range(cfg.questions_per_image):
        chosen = None
        for _try in range(10):
            task = rng.choices(tasks, weights=[weights[t] for t in tasks])[0]
            q = make_question(scene, task, rng, cfg.short_qtypes, cfg.reasoning)
            if q is None:
                continue
            chosen = q
            if q["question"] not in asked:
                break
        if chosen is None:  # only unsupported tasks/qtypes were drawn (e.g. freeform, one object)
            chosen = (make_question(scene, "short", rng, cfg.short_qtypes, cfg.reasoning)
                      or make_question(scene, "short", rng, reasoning=cfg.reasoning))
        asked.add(chosen["question"])
        out.append(chosen)
    return out


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
    for index, (scene, image, rng) in enumerate(scenes):
        image_id = f"{split}-{index:05d}"
        for j, q in enumerate(_questions_for(scene, rng, cfg)):
            rows["id"].append(f"{image_id}-{j}")
            rows["image_id"].append(image_id)
            rows["image"].append({"bytes": image, "path": None})
            rows["prompt"].append([{"role": "user", "content": q["question"]}])
            rows["objects"].append(scene.names)
            rows["scene"].append(scene.to_json())
            for key in ("question", "task", "qtype", "answer", "reasoning"):
                rows[key].append(q[key])
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
) -> datasets.DatasetDict:
    """Generate the Shapes dataset: splits `train`, `heldout` and (when `num_rl_images` > 0) `rl`.

    Held-out scenes come from their own random stream and depend only on the seed and their own
    index, so changing the train or RL size never changes the held-out questions. A train or RL
    candidate whose scene signature or PNG hash matches a held-out image is redrawn; RL scenes are
    also kept apart from train scenes (fresh images the warm-up never saw). Equal arguments give
    byte-identical datasets.
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
    return datasets.DatasetDict(
        {split: datasets.Dataset.from_dict(_split_rows(split, scenes, cfg), features=FEATURES)
         for split, scenes in splits.items()}
    )


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
