"""The separate RLAIF-V labeler: claim questions, the describe-then-check labeler, training and
caching of `labeler: trained`, fresh round scenes and the held-out description set."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from rewards.rlaifv.claims import parse_shapes_claims
from rewards.rlaifv.describe_labeler import DescribingLabeler, inventory_scene, judge
from rewards.rlaifv.labeler import LabelItem, check_claim, labeler_agreement, make_labeler
from rl.configlib import FieldError
from rl.data.scenes import Scene, random_scene
from rl.train_labeler import LabelerTraining, balanced_items, claim_questions, question_claim
from rollouts.types import Completion, Rollout


def test_claim_questions_are_half_true_and_the_oracle_agrees():
    truths = []
    for i in range(200):
        scene = random_scene(random.Random(i))
        for question, answer in claim_questions(scene, random.Random(1000 + i)):
            claim = question_claim(question)
            assert claim.question == question
            truths.append((check_claim(claim, scene), answer == "yes"))
    assert all(verdict == want for verdict, want in truths)
    assert sum(want for _, want in truths) == len(truths) // 2


def test_question_claim_rejects_a_question_the_splitter_never_asks():
    with pytest.raises(ValueError, match="asks no"):
        question_claim("Is the red circle bigger than the blue square?")


class FakeDescriber:
    """A fake labeler engine: answers every request with the description it was given."""

    def __init__(self, text: str):
        self.text, self.calls = text, 0

    def generate(self, requests):
        self.calls += 1
        return [Rollout(r.request_id, r.mode, "", [1], [Completion(self.text, [1], [0.0], "stop")], 0) for r in requests]


def _items(statement: str, scene: Scene, image) -> list[LabelItem]:
    return [LabelItem(c, [image], scene.to_json()) for c in parse_shapes_claims(statement)]


def test_describing_labeler_checks_claims_against_its_own_description():
    from PIL import Image

    scene = Scene.from_json(json.dumps({"image_size": 64, "objects": [
        {"box": [2, 2, 20, 20], "cell": [0, 0], "colour": "red", "shape": "circle", "size": "small"},
        {"box": [40, 40, 60, 60], "cell": [1, 1], "colour": "blue", "shape": "square", "size": "large"}]}))
    image = Image.new("RGB", (64, 64))
    # the labeler saw the red circle (right cell) and missed the blue square
    engine = FakeDescriber("There is a red circle at the top left.")
    labeler = DescribingLabeler(engine)
    items = _items("There is a red circle at the top left, a blue square at the bottom right and a green "
                   "triangle at the top right. The red circle is large.", scene, image)
    labels = labeler.label(items)
    verdicts = {lab.claim.text: lab.verdict for lab in labels}
    assert verdicts["there is a red circle"] == "accepted"
    assert verdicts["the red circle is at the top left"] == "accepted"
    assert verdicts["there is a blue square"] == "rejected"  # its miss: a true claim rejected
    assert verdicts["there is a green triangle"] == "rejected"
    assert verdicts["the red circle is large"] == "unparseable"  # descriptions say no sizes
    assert engine.calls == 1 and len(labeler.descriptions) == 1  # one description per distinct image
    oracle = make_labeler("oracle").label(items)
    agree = labeler_agreement(labels, oracle)
    # wrong on the blue square and its cell (true, missed), right on the rest; the size is skipped
    assert verdicts["the blue square is at the bottom right"] == "rejected"
    assert agree["skipped"] == 1 and agree["n"] == 6 and agree["accuracy"] == pytest.approx(4 / 6)


def test_inventory_scene_reads_cells_and_skips_negations():
    scene, named = inventory_scene("There is a red circle at the top left and no blue square. A green triangle.")
    assert [(o.name, o.position) for o in scene.objects] == [("red circle", "top left")]
    assert named == {("red", "circle"), ("green", "triangle")}
    (claim,) = [c for c in parse_shapes_claims("There is a green triangle.")]
    assert judge(claim, scene, named) is True


def test_balanced_agreement_of_an_accept_everything_labeler_is_one_half(shapes_small):
    items = balanced_items(shapes_small["heldout"], 10)
    oracle = make_labeler("oracle").label(items)
    yes = [type(lab)(lab.claim, True, 1.0, 0.0, source="fake") for lab in oracle]
    agree = labeler_agreement(yes, oracle)
    assert agree["oracle_rejection_rate"] == pytest.approx(0.5)
    assert agree["balanced_accuracy"] == pytest.approx(0.5) and agree["true_claims_accepted"] == 1.0


def test_labeler_training_settings_are_validated():
    with pytest.raises(FieldError, match="protocol"):
        LabelerTraining(protocol="guess").validate()
    with pytest.raises(FieldError, match="steps"):
        LabelerTraining(steps=0).validate()
    with pytest.raises(FieldError, match="vision.steps"):
        LabelerTraining(vision=LabelerTraining().vision.__class__(steps=-1)).validate()


def test_trained_labeler_is_refused_on_user_data(tmp_path):
    from rl.config import TrainConfig
    from rl.train_labeler import ensure_labeler

    cfg = TrainConfig(output_dir=str(tmp_path))
    cfg.data.source = "hf"
    with pytest.raises(FieldError, match="model:<path-or-name>"):
        ensure_labeler(SimpleNamespace(cfg=cfg, out=Path(tmp_path), data=None))


def test_trained_labeler_learns_to_describe_and_is_cached(tmp_path, shapes_small):
    """A few steps of the real training path: the folder is complete, its held-out agreement is
    measured on balanced claims, and a second call reuses it without training."""
    from rl.config import TrainConfig
    from rl.data.loader import LoadedData
    from rl.train_labeler import INFO, ensure_labeler

    cfg = TrainConfig(output_dir=str(tmp_path))
    t = cfg.rlaifv.labeler_training
    t.images, t.steps, t.batch_size, t.eval_images, t.vision.steps, t.vision.batch_size = 64, 3, 8, 4, 2, 8
    t.cache_dir = str(tmp_path / "cache")
    ctx = SimpleNamespace(cfg=cfg, out=Path(tmp_path), data=LoadedData(shapes_small["train"], shapes_small["heldout"], {}))
    path, info = ensure_labeler(ctx)
    assert Path(path, INFO).exists() and Path(path, "config.json").exists() and not info["cached"]
    assert info["sft"]["steps"] == 3 and info["examples"] == 64
    agree = info["heldout_agreement"]
    assert agree["n"] + agree["skipped"] == 16 and agree["oracle_rejection_rate"] == pytest.approx(0.5, abs=0.1)
    again_path, again = ensure_labeler(ctx)
    assert again_path == path and again["cached"] and again["sft"]["train_loss"] == info["sft"]["train_loss"]

    from rl.train_labeler import settings_key

    keys = {settings_key(LabelerTraining(steps=n), "idefics3", "tiny", 64, "", set()) for n in (3, 4)}
    keys.add(settings_key(LabelerTraining(steps=3, cache_dir="/elsewhere"), "idefics3", "tiny", 64, "", set()))
    assert len(keys) == 2  # another setting is another labeler; the cache folder is not a setting


def test_heldout_descriptions_cover_every_heldout_image_once(shapes_small):
    from rl.stages.rlaifv import heldout_descriptions

    held = shapes_small["heldout"]
    rows = heldout_descriptions(held)
    assert sorted(r["image_id"] for r in rows) == sorted(set(held["image_id"]))
    assert {r["question"] for r in rows} == {"Describe the image."} and all(r["objects"] for r in rows)
    native = {r["id"] for r in held if r["task"] == "description"}
    assert native <= {r["id"] for r in rows}  # the split's own description rows are kept as they are
    assert len(heldout_descriptions(held, 3)) == 3


def test_scenes_to_avoid_include_the_two_image_and_video_rows():
    from rl.data.shapes import make_shapes
    from rl.vision_pretrain import excluded_signatures

    data = make_shapes(num_train_images=6, num_heldout_images=4, seed=1, compare_share=0.5, motion_share=0.5)
    held = data["heldout"]
    media = [json.loads(s) for s, q in zip(held["scene"], held["qtype"], strict=True) if q in ("compare", "motion")]
    assert media  # the split has such rows, whose scene JSON is not a single scene
    avoid = excluded_signatures(held)
    inner = [Scene.from_json(json.dumps(p)).signature() for m in media for p in m.get("images", [m.get("video")])]
    assert inner and set(inner) <= avoid
