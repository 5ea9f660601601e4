"""Shapes scenes: 1-4 coloured shapes on a 2x2 grid, and their pixels.

A scene holds at most one object per cell, jittered inside it, and no two objects share a colour
and a shape, so a phrase like "red circle" names exactly one object. `render` draws a scene without
anti-aliasing (object pixels carry the exact colour). The question generators
(`rl.data.shapes_questions`) and the dataset builder (`rl.data.shapes`) work on these scenes.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import asdict, dataclass

from PIL import Image, ImageDraw

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
def companion(colour: str, shape: str) -> tuple[str, str]:
    """The object a "colour shape" is usually described with in the train captions' language prior
    (`ShapesConfig.caption_extras`): the same colour, the next shape ("red circle" -> "red square",
    "red triangle" -> "red circle")."""
    return colour, SHAPES[(SHAPES.index(shape) + 1) % len(SHAPES)]


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
