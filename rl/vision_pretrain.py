"""Perception pretraining: the tiny model's stand-in for a pretrained vision encoder.

Real policies (Qwen2.5-VL, MiniCPM-V, SmolVLM) start from a vision tower pretrained on billions
of images; the embedded tiny model starts from a random one, and language supervision alone
(the warm-up SFT) teaches it little: after 400 warm-up steps the demo policy names a shape or
tells whether an object exists near chance level. Before the warm-up, this module trains the
vision tower and the connector with a temporary linear head that reads the image tokens and
predicts, for every cell of a Shapes scene, its object's colour, shape and size ("empty" when
the cell is free). The head is thrown away; the warm-up then trains the language model to read
the pretrained image tokens.

Like an encoder's pretraining corpus, the images are not the task's: every batch is drawn fresh
from the scene generator (`rl.data.scenes.random_scene`), skipping any scene whose signature is
one of the held-out or RL split's (those stay unseen). The held-out split's labels only measure
the result. Measured: 600 steps on the 600 train images alone memorise them (held-out shape
accuracy 0.81); fresh scenes reach 0.99 in the same steps. Pure label and loss functions are at
the top; the training loop needs torch and a model whose `get_image_features` takes
`pixel_values` (Idefics3, the embedded default).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rl.configlib import FieldError

if TYPE_CHECKING:
    from rl.data.scenes import Scene


def attributes() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Label groups of a cell, (attribute, values); class 0 of each means "no object here".

    A function, so the config tree (which holds `VisionPretrainConfig`) does not import PIL.
    """
    from rl.data.scenes import COLOURS, SHAPES, SIZES

    return (("colour", COLOURS), ("shape", SHAPES), ("size", SIZES))


def classes_per_cell() -> int:
    return sum(len(values) + 1 for _, values in attributes())


def _cells() -> tuple[tuple[int, int], ...]:
    from rl.data.scenes import CELLS

    return CELLS


@dataclass
class VisionPretrainConfig:
    """`warmup.vision_pretrain`: steps of per-cell scene-label training before the warm-up SFT."""

    steps: int = 0  # 0 = off (real models bring a pretrained vision tower)
    batch_size: int = 64
    learning_rate: float = 1e-3
    eval_images: int = 200  # held-out images the per-attribute accuracy is measured on (0 = none)

    def validate(self) -> None:
        if self.steps < 0:
            raise FieldError("vision_pretrain.steps", f"must be >= 0 (0 = off), got {self.steps}")
        if self.batch_size < 1:
            raise FieldError("vision_pretrain.batch_size", f"must be >= 1, got {self.batch_size}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise FieldError("vision_pretrain.learning_rate", f"must be a positive number, got {self.learning_rate}")
        if self.eval_images < 0:
            raise FieldError("vision_pretrain.eval_images", f"must be >= 0, got {self.eval_images}")


def cell_labels(scene: Scene) -> list[list[int]]:
    """[cell][attribute] class indices of a 2x2 scene: 0 = empty cell, i + 1 = the i-th value."""
    attrs, cells = attributes(), _cells()
    labels = [[0] * len(attrs) for _ in cells]
    for obj in scene.objects:
        row = labels[cells.index(obj.cell)]
        for j, (name, values) in enumerate(attrs):
            row[j] = values.index(getattr(obj, name)) + 1
    return labels


def labelled_images(rows: Any, limit: int = 0) -> list[tuple[Any, list[list[int]]]]:
    """(image, cell labels) of every distinct single-image scene in `rows` (first row per image_id)."""
    from rl.data.scenes import Scene

    out, seen = [], set()
    for row in rows:
        if row.get("image_id") in seen or not row.get("scene") or len(row.get("images") or []) != 1:
            continue
        seen.add(row["image_id"])
        out.append((row["images"][0], cell_labels(Scene.from_json(row["scene"]))))
        if limit and len(out) >= limit:
            break
    return out


def split_logits(logits: Any) -> list[Any]:
    """[batch, cells, classes_per_cell()] -> one [batch, cells, values + 1] tensor per attribute."""
    parts, start = [], 0
    for _, values in attributes():
        parts.append(logits[..., start : start + len(values) + 1])
        start += len(values) + 1
    return parts


def label_loss(logits: Any, labels: Any) -> Any:
    """Mean cross-entropy over cells and attributes (`labels`: [batch, cells, attributes])."""
    import torch.nn.functional as F

    parts = split_logits(logits)
    return sum(F.cross_entropy(p.reshape(-1, p.shape[-1]), labels[..., j].reshape(-1)) for j, p in enumerate(parts)) / len(parts)


def label_accuracy(logits: Any, labels: Any) -> dict[str, float]:
    """Share of cells whose attribute is predicted right, per attribute (empty cells included)."""
    return {name: float((p.argmax(-1) == labels[..., j]).float().mean())
            for j, ((name, _), p) in enumerate(zip(attributes(), split_logits(logits), strict=True))}


class _Probe:
    """The vision tower + connector of `model` with a linear per-cell head on the image tokens."""

    def __init__(self, model: Any, processor: Any, seed: int):
        import torch

        self.inner = getattr(model, "model", model)
        if not hasattr(self.inner, "get_image_features") or not hasattr(self.inner, "vision_model"):
            raise FieldError("vision_pretrain.steps", f"perception pretraining needs an Idefics3-style model "
                             f"(vision_model + get_image_features); {type(model).__name__} has none: set it to 0")
        self.processor = processor
        self.torch = torch
        probe = self.image_tokens([_blank_image()])
        generator = torch.Generator().manual_seed(seed)
        in_features = probe.shape[1] * probe.shape[2]
        self.head = torch.nn.Linear(in_features, len(_cells()) * classes_per_cell())
        with torch.no_grad():
            bound = 1 / math.sqrt(in_features)
            self.head.weight.uniform_(-bound, bound, generator=generator)
            self.head.bias.zero_()

    def image_tokens(self, images: list[Any]) -> Any:
        inputs = self.processor.image_processor(images, return_tensors="pt")
        dtype = next(self.inner.vision_model.parameters()).dtype
        feats = self.inner.get_image_features(pixel_values=inputs["pixel_values"].to(dtype),
                                              pixel_attention_mask=inputs.get("pixel_attention_mask"))
        return getattr(feats, "pooler_output", feats)

    def parameters(self) -> list[Any]:
        return [*self.inner.vision_model.parameters(), *self.inner.connector.parameters(), *self.head.parameters()]

    def logits(self, images: list[Any]) -> Any:
        tokens = self.image_tokens(images)
        if tokens.shape[0] != len(images):
            raise FieldError("vision_pretrain.steps", f"the image processor split {len(images)} images into "
                             f"{tokens.shape[0]} tiles; perception pretraining needs one tile per image "
                             "(the embedded tiny model): set it to 0 for this model")
        out = self.head(tokens.reshape(tokens.shape[0], -1).float())
        return out.reshape(len(images), len(_cells()), classes_per_cell())

    def accuracy(self, data: list[tuple[Any, list[list[int]]]], batch: int = 100) -> dict[str, float]:
        torch = self.torch
        sums: dict[str, float] = {}
        with torch.no_grad():
            for i in range(0, len(data), batch):
                chunk = data[i : i + batch]
                acc = label_accuracy(self.logits([im for im, _ in chunk]), torch.tensor([lab for _, lab in chunk]))
                for k, v in acc.items():
                    sums[k] = sums.get(k, 0.0) + v * len(chunk)
        return {k: v / len(data) for k, v in sums.items()}


def _blank_image() -> Any:
    from PIL import Image

    return Image.new("RGB", (64, 64), (245, 245, 240))


def excluded_signatures(*splits: Any) -> set[tuple]:
    """Scene signatures of every row of `splits` that carries a `scene` (rows without one are
    skipped); a two-image or video row contributes the scenes it is drawn from."""
    import json

    from rl.data.scenes import Scene

    out: set[tuple] = set()
    for rows in splits:
        if rows is None or "scene" not in rows.column_names:
            continue
        for text in rows["scene"]:
            if not text:
                continue
            data = json.loads(text)
            parts = data["images"] if "images" in data else [data["video"]] if "video" in data else [data]
            out |= {Scene.from_json(json.dumps(p)).signature() for p in parts if "objects" in p}
    return out


def fresh_batch(rng: random.Random, n: int, image_size: int, avoid: set[tuple]) -> list[tuple[Any, list[list[int]]]]:
    """`n` (image, cell labels) of new generator scenes whose signature is not in `avoid`."""
    from rl.data.scenes import random_scene, render

    out = []
    while len(out) < n:
        scene = random_scene(rng, image_size)
        if scene.signature() not in avoid:
            out.append((render(scene), cell_labels(scene)))
    return out


def pretrain_vision(model: Any, processor: Any, cfg: VisionPretrainConfig, heldout_rows: Any, avoid: set[tuple],
                    image_size: int = 64, seed: int = 0) -> dict[str, Any]:
    """Train `model`'s vision tower and connector on per-cell labels of fresh scenes, in place.

    `avoid`: signatures of scenes that must stay unseen (`excluded_signatures` of the held-out and
    RL splits). Returns the held-out per-attribute cell accuracy before and after (on up to
    `cfg.eval_images` distinct images of `heldout_rows`), the first and last losses, seconds.
    """
    cfg.validate()
    heldout = labelled_images(heldout_rows, cfg.eval_images) if cfg.eval_images and heldout_rows is not None else []
    probe = _Probe(model, processor, seed)
    torch = probe.torch
    was_training = model.training
    model.train()
    before = probe.accuracy(heldout) if heldout else {}
    optimizer = torch.optim.AdamW(probe.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    rng = random.Random(f"vision_pretrain/{seed}")
    losses: list[float] = []
    t0 = time.perf_counter()
    # A constant rate: shape recognition is learnt late (held-out shape accuracy ~0.8 at step 300,
    # 0.99 by 500-600 at 1e-3), and a cosine decay over 600 steps stopped it at 0.94 (measured).
    for _ in range(cfg.steps):
        batch = fresh_batch(rng, cfg.batch_size, image_size, avoid)
        loss = label_loss(probe.logits([im for im, _ in batch]), torch.tensor([lab for _, lab in batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - t0
    optimizer.zero_grad(set_to_none=True)
    after = probe.accuracy(heldout) if heldout else {}
    model.train(was_training)
    return {
        "steps": cfg.steps,
        "images_seen": cfg.steps * cfg.batch_size,
        "heldout_images": len(heldout),
        "heldout_cell_accuracy_before": before,
        "heldout_cell_accuracy": after,
        "first_loss": losses[0] if losses else float("nan"),
        "final_loss": losses[-1] if losses else float("nan"),
        "seconds": seconds,
    }
