"""A describe-then-check claim labeler: a labeler model's own description is the reference.

RLAIF-V's labeler answers a yes/no question per claim. A labeler model that cannot answer such
questions about an image may still describe the image well; this labeler asks it for one greedy
description per distinct image (fast mode, the prompt "Describe the image."), reads that
description into an inventory with the Shapes claim parser (objects and their cells), and judges
each claim of the policy's responses against that inventory with the same checks the oracle runs
against the ground truth (`check_claim`). What the labeler did not say counts as absent, so its
misses reject true claims and its own hallucinations accept false ones: agreement with the
ground truth is measured per round like any labeler's.

Why it exists: the embedded tiny labeler learns to describe fresh scenes almost perfectly but
stays at chance on yes/no questions about them however it is trained (README, "Hallucination
reduction with RLAIF-V": four designs measured). Claims the inventory cannot judge (sizes; an
object named without a cell) are unparseable, like a failed yes/no score. Shapes data only
(the parser and checks are the Shapes grammar's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.common import images_key
from rewards.rlaifv.claims import Claim, parse_shapes_claims
from rewards.rlaifv.labeler import ClaimLabel, LabelItem, _unparseable, check_claim, verdict_label
from rl.data.scenes import CELL_NAMES, Scene, SceneObject
from rollouts.types import RolloutRequest, SamplingSettings, split_media

DESCRIBE_PROMPT = "Describe the image."
_CELLS = {name: cell for cell, name in CELL_NAMES.items()}


def inventory_scene(description: str) -> tuple[Scene, set[tuple[str, str]]]:
    """(scene of the objects `description` places in a cell, every (colour, shape) it says is
    there). Negated mentions are left out; the first cell named for an object wins; objects
    sharing a cell are kept (the checks only read cells and names)."""
    named: dict[tuple[str, str], str | None] = {}
    for c in parse_shapes_claims(description):
        if c.negated or c.colour is None or c.shape is None:
            continue
        key = (c.colour, c.shape)
        if c.kind == "object":
            named.setdefault(key, None)
        elif c.kind == "attribute" and c.attribute == "position" and c.position in _CELLS:
            if named.get(key) is None:
                named[key] = c.position
    objects = tuple(SceneObject(shape, colour, "unknown", _CELLS[pos], (0, 0, 0, 0))
                    for (colour, shape), pos in named.items() if pos is not None)
    return Scene(objects=objects), set(named)


def judge(claim: Claim, scene: Scene, named: set[tuple[str, str]]) -> bool | None:
    """Truth of `claim` against a described inventory (None: the inventory cannot tell)."""
    if claim.kind == "attribute" and claim.attribute == "size":
        return None
    if claim.kind == "object" and claim.colour and claim.shape:  # named without a cell still counts
        return ((claim.colour, claim.shape) not in named) if claim.negated else ((claim.colour, claim.shape) in named)
    return check_claim(claim, scene)


class DescribingLabeler:
    """Labels claims against `engine`'s greedy description of each item's media (module doc).

    `engine`: an `Engine` (`generate`) on the labeler model: a `RolloutPool` or `HFEngine`.
    One `generate` call per `label` call; descriptions are kept in `descriptions` (by image key)
    for the round's records.
    """

    def __init__(self, engine: Any, source: str = "trained", max_tokens: int = 64, seed: int = 0):
        self.engine = engine
        self.source = source
        self.max_tokens = max_tokens
        self.seed = seed
        self.descriptions: dict[str, str] = {}

    def _describe(self, items: Sequence[LabelItem]) -> None:
        """Describe every distinct image of `items` not described yet (one `generate` call)."""
        from rewards.verifiers import extract_answer

        memo: dict[int, str] = {}
        todo: dict[str, list[Any]] = {}
        for item in items:
            key = images_key(list(item.images or []), memo)
            if key not in self.descriptions and key not in todo:
                todo[key] = list(item.images or [])
        sampling = SamplingSettings(temperature=0.0, max_tokens=self.max_tokens, seed=self.seed)
        requests = []
        for i, media in enumerate(todo.values()):
            images, videos = split_media(media)
            requests.append(RolloutRequest(f"labeler-describe-{i}", [{"role": "user", "content": DESCRIBE_PROMPT}],
                                           images, "fast", 1, sampling, videos))
        outs = self.engine.generate(requests) if requests else []
        for key, out in zip(todo, outs, strict=True):
            if out.ok and out.completions:
                self.descriptions[key] = extract_answer(out.completions[0].text)

    def label(self, items: Sequence[LabelItem]) -> list[ClaimLabel]:
        self._describe(items)
        memo: dict[int, str] = {}
        parsed: dict[str, tuple[Scene, set[tuple[str, str]]]] = {}
        out = []
        for item in items:
            key = images_key(list(item.images or []), memo)
            if key not in self.descriptions:
                out.append(_unparseable(item.claim, "labeler: no description of the image", self.source))
                continue
            if key not in parsed:
                parsed[key] = inventory_scene(self.descriptions[key])
            out.append(verdict_label(item.claim, judge(item.claim, *parsed[key]), self.source,
                                     "labeler: its description cannot judge this claim"))
        return out
