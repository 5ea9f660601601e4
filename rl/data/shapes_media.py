"""Shapes rows with more than one picture: two-image comparisons and short videos.

* `compare` (two images): "Which image has more circles, the first or the second?" The two scenes
  are drawn so the counts differ and each answer is equally likely; the reasoning walks both
  inventories and states both counts.
* `motion` (a video): one object slides from its cell into a free neighbouring cell over the
  frames (the others stay), "Which way does the red circle move?" → left / right / up / down. The
  reasoning names the cell in the first and in the last frame.

Both are `short` tasks (rule-checked answers), so warm-up SFT, GRPO and evaluation use them like
any other question. Each row comes from its own random stream (`shapes/<seed>/<split>-<kind>/<i>`),
so adding these rows never changes the single-image rows of a split.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import Any

from rl.data.scenes import CELL_NAMES, CELLS, SHAPES, Scene, SceneObject, png_bytes, random_scene, render
from rl.data.shapes_questions import inventory

DIRECTIONS: dict[str, tuple[int, int]] = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
ORDINALS = ("first", "second")


def _rng(seed: int, split: str, kind: str, index: int) -> random.Random:
    return random.Random(f"shapes/{seed}/{split}-{kind}/{index}")


def _count(scene: Scene, shape: str) -> int:
    return sum(o.shape == shape for o in scene.objects)


def compare_row(seed: int, split: str, index: int, image_size: int) -> dict[str, Any]:
    """One two-image comparison row (canonical schema, images as PNG bytes)."""
    rng = _rng(seed, split, "compare", index)
    shape = rng.choice(SHAPES)
    want_first = rng.random() < 0.5  # each answer equally likely
    while True:
        a, b = random_scene(rng, image_size), random_scene(rng, image_size)
        if _count(a, shape) != _count(b, shape):
            break
    if (_count(a, shape) > _count(b, shape)) != want_first:
        a, b = b, a
    na, nb = _count(a, shape), _count(b, shape)
    answer = ORDINALS[0] if na > nb else ORDINALS[1]
    reasoning = (f"In the first image: {inventory(a)} In the second image: {inventory(b)} "
                 f"The first has {na} {shape}{'s' * (na != 1)} and the second {nb}, so the {answer} has more.")
    question = f"Which image has more {shape}s, the first or the second?"
    scene = json.dumps({"images": [json.loads(a.to_json()), json.loads(b.to_json())]}, sort_keys=True)
    return {"image_id": f"{split}-compare-{index:05d}", "images": [png_bytes(render(a)), png_bytes(render(b))],
            "videos": [], "question": question, "qtype": "compare", "answer": answer, "reasoning": reasoning,
            "objects": [], "scene": scene}


def _moves(scene: Scene) -> list[tuple[SceneObject, str, tuple[int, int]]]:
    taken = {o.cell for o in scene.objects}
    out = []
    for o in scene.objects:
        for word, (dr, dc) in DIRECTIONS.items():
            cell = (o.cell[0] + dr, o.cell[1] + dc)
            if cell in CELLS and cell not in taken:
                out.append((o, word, cell))
    return out


def motion_frames(scene: Scene, obj: SceneObject, cell: tuple[int, int], num_frames: int) -> list[Scene]:
    """The scene with `obj` moved in equal steps from its box to the same offset inside `cell`."""
    cell_px = scene.image_size // 2
    dy, dx = (cell[0] - obj.cell[0]) * cell_px, (cell[1] - obj.cell[1]) * cell_px
    frames = []
    for k in range(num_frames):
        t = k / (num_frames - 1)
        x0, y0, x1, y1 = obj.box
        ox, oy = round(dx * t), round(dy * t)
        moved = replace(obj, box=(x0 + ox, y0 + oy, x1 + ox, y1 + oy), cell=cell if k == num_frames - 1 else obj.cell)
        frames.append(Scene(tuple(moved if o is obj else o for o in scene.objects), scene.image_size))
    return frames


def motion_row(seed: int, split: str, index: int, image_size: int, num_frames: int, fps: float) -> dict[str, Any]:
    """One video row: frames as PNG bytes with their fps (canonical schema)."""
    rng = _rng(seed, split, "motion", index)
    direction = rng.choice(sorted(DIRECTIONS))  # each answer equally likely
    while True:
        scene = random_scene(rng, image_size)
        options = [m for m in _moves(scene) if m[1] == direction]
        if options:
            break
    obj, _, cell = rng.choice(options)
    frames = motion_frames(scene, obj, cell, num_frames)
    reasoning = (f"In the first frame the {obj.name} is at the {CELL_NAMES[obj.cell]}; in the last frame it is at "
                 f"the {CELL_NAMES[cell]}, so it moves {direction}.")
    return {"image_id": f"{split}-motion-{index:05d}", "images": [],
            "videos": [{"frames": [png_bytes(render(f)) for f in frames], "fps": float(fps)}],
            "question": f"Which way does the {obj.name} move?", "qtype": "motion", "answer": direction,
            "reasoning": reasoning, "objects": [], "scene": json.dumps({"video": json.loads(scene.to_json()),
                                                                         "moving": obj.name, "to": list(cell)})}
