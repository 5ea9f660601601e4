"""The yes/no labeler on the real tiny VLM: probabilities equal the model's next-token softmax."""

from __future__ import annotations

import random

import pytest
import torch

from policies.loading import PolicyConfig, load_policy
from policies.media import forward_media
from policies.scoring import HFScorer
from rewards.rlaifv.claims import ShapesClaimSplitter
from rewards.rlaifv.labeler import ANSWER_SUFFIX, LabelItem, ProbabilityLabeler
from rl.data.scenes import random_scene, render
from rl.data.shapes_questions import describe


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    model, processor, _ = load_policy(PolicyConfig(name_or_path=tiny_model_dir))
    return model.eval(), processor


def test_labels_match_first_token_distribution(policy):
    model, processor = policy
    scene = random_scene(random.Random(4), min_objects=2)
    image = render(scene)
    claims = ShapesClaimSplitter().split(describe(scene), "p0", 0)
    assert len(claims) >= 4  # two objects, each with an existence and a position claim
    labeler = ProbabilityLabeler.from_processor(HFScorer(model, processor), processor)
    labels = labeler.label([LabelItem(c, images=[image]) for c in claims])
    assert all(lab.ok for lab in labels)

    tok = processor.tokenizer
    first = {w: tok.encode(w, add_special_tokens=False) for w in ("yes", "Yes", "no", "No")}
    assert all(len(ids) == 1 for ids in first.values())  # one token each in the tiny tokenizer
    for claim, lab in zip(claims, labels, strict=True):
        ids = labeler.encode_prompt(
            [{"role": "user", "content": claim.question + ANSWER_SUFFIX}], [image], "fast"
        )
        ids_t = torch.tensor([ids])
        extra = forward_media(processor, [[image]], [[]], ids_t)
        with torch.no_grad():
            logits = model(input_ids=ids_t, **extra).logits[0, -1].float()
        probs = torch.softmax(logits, dim=-1)
        p_yes = float(probs[first["yes"][0]] + probs[first["Yes"][0]])
        p_no = float(probs[first["no"][0]] + probs[first["No"][0]])
        assert lab.p_yes == pytest.approx(p_yes, rel=1e-4, abs=1e-7)
        assert lab.p_no == pytest.approx(p_no, rel=1e-4, abs=1e-7)
        assert lab.accepted == (p_yes > p_no)
