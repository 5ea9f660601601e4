"""Perception pretraining (rl.vision_pretrain): labels, config errors, and that it teaches the tower."""

from __future__ import annotations

import pytest

from rl.configlib import FieldError
from rl.data.scenes import Scene, SceneObject
from rl.vision_pretrain import (
    VisionPretrainConfig,
    cell_labels,
    excluded_signatures,
    fresh_batch,
    labelled_images,
    pretrain_vision,
)


def test_cell_labels_mark_objects_and_empty_cells():
    scene = Scene(objects=(SceneObject("triangle", "blue", "large", (0, 1), (33, 1, 55, 23)),
                           SceneObject("circle", "red", "small", (1, 0), (2, 34, 15, 47))))
    # colours: red green blue yellow purple; shapes: circle square triangle; sizes: small large (+1: 0 = empty)
    assert cell_labels(scene) == [[0, 0, 0], [3, 3, 2], [1, 1, 1], [0, 0, 0]]


def test_config_errors_name_the_field():
    with pytest.raises(FieldError, match="vision_pretrain.steps"):
        VisionPretrainConfig(steps=-1).validate()
    with pytest.raises(FieldError, match="vision_pretrain.learning_rate"):
        VisionPretrainConfig(learning_rate=0.0).validate()


def test_fresh_scenes_avoid_the_held_out_ones(shapes_small):
    """A scene whose signature is to be avoided never comes back; the others come in draw order."""
    import random

    from rl.data.scenes import random_scene

    assert len(excluded_signatures(shapes_small["heldout"], None)) == len(labelled_images(shapes_small["heldout"]))
    rng = random.Random(7)
    drawn = [random_scene(rng) for _ in range(300)]
    avoid = {scene.signature() for scene in drawn[:150:2]}  # every other one of the first 150
    got = [lab for _, lab in fresh_batch(random.Random(7), 100, 64, avoid)]
    expected = [cell_labels(scene) for scene in drawn if scene.signature() not in avoid][:100]
    assert got == expected
    assert not {str(cell_labels(scene)) for scene in drawn[:150:2]} & {str(lab) for lab in got}


def test_non_shapes_data_gives_a_clear_error(tiny_model_dir):
    from types import SimpleNamespace

    from rl.stages.warmup import WarmupConfig, pretrain_perception

    ctx = SimpleNamespace(cfg=SimpleNamespace(data=SimpleNamespace(source="files"), seed=0), data=None)
    with pytest.raises(FieldError, match="warmup.vision_pretrain.steps=0"):
        pretrain_perception(ctx, WarmupConfig(), None, None)


def test_pretraining_teaches_the_vision_tower_per_cell_labels(tiny_model_dir):
    """From the random tower, 150 steps on fresh scenes lift held-out cell accuracy well above
    where it starts, and move only the vision tower and connector (the language model is untouched)."""
    import torch

    from policies.loading import PolicyConfig, load_model, load_processor
    from rl.data.shapes import make_shapes

    data = make_shapes(num_train_images=8, num_heldout_images=60, questions_per_image=1, seed=5)
    model = load_model(tiny_model_dir, PolicyConfig(name_or_path=tiny_model_dir))
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    out = pretrain_vision(model, load_processor(tiny_model_dir),
                          VisionPretrainConfig(steps=150, batch_size=32, learning_rate=2e-3, eval_images=60),
                          data["heldout"], excluded_signatures(data["heldout"]), seed=0)
    acc0, acc1 = out["heldout_cell_accuracy_before"], out["heldout_cell_accuracy"]
    assert out["heldout_images"] == 60 and out["images_seen"] == 150 * 32
    assert out["final_loss"] < 0.5 * out["first_loss"], out
    for name in ("colour", "shape", "size"):
        assert acc1[name] > acc0[name] + 0.15, (name, acc0, acc1)
    assert acc1["colour"] > 0.75, acc1  # colours are exact pixels: learnt first
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(("vision" in k or "connector" in k) for k in changed), sorted(changed)[:5]
