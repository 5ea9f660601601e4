"""Claim labelling: a labeler answers each claim's yes/no question about the image.

RLAIF-V's "conquer" step (arXiv 2405.17220, §3.2): the labeler MLLM sees the image and the
question (with an instruction to answer yes or no appended); from its next-token distribution,
P_yes = p("yes") + p("Yes") and P_no = p("no") + p("No"); the claim is accepted iff
P_yes > P_no.

`ProbabilityLabeler` reads those probabilities through the `Scorer` protocol (teacher-forced
log-probs), so it works with the policy's own rollout actors (`labeler: self`), another VLM on
its own actor (`labeler: model:<path>`), or `HFScorer` in tests. For each answer word w it
scores the sequence prompt ‖ encode(w) and takes log p(w | prompt) = Σ of the log-probs of w's
tokens. For a word that is one token this is exactly the paper's first-token probability; for
tokenizers that split a word ("Yes" → "Y" + "es") it is the probability that the model's answer
*starts with that spelling of the word* — the natural extension (deviation: the paper assumes
one token each; other tokenisations of the same word, which a model rarely produces, are not
summed). Words that tokenize identically (a lower-casing tokenizer) are counted once per side.

Outcomes per claim: accepted, rejected, or *unparseable* (`error` set): the prompt could not be
built (e.g. the image failed to load), the scorer returned an error or the wrong number of
log-probs, a log-prob was NaN/+inf, or every answer word had probability 0. An unparseable
claim is neither accepted nor rejected; it leaves its response with fewer judgements than
claims, so the pair builder's consistency check keeps that response out of pairs.

`OracleLabeler` (`labeler: oracle`, for ablations only) checks a claim's parsed fields against
the Shapes scene; its labels are marked `source="oracle"`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from rewards.common import images_key
from rewards.rlaifv.claims import Claim, iter_subclaims
from rewards.rlaifv.config import parse_labeler_spec
from rl.data.scenes import Scene, SceneObject, relations
from rollouts.types import ScoreRequest, split_media

ANSWER_SUFFIX = " Answer yes or no."
YES_WORDS: tuple[str, ...] = ("yes", "Yes")
NO_WORDS: tuple[str, ...] = ("no", "No")
LABEL_MODE = "fast"  # answer directly: the empty think block is pre-filled

PromptEncoder = Callable[[list[dict[str, Any]], list[Any], str], list[int]]  # (messages, images, mode)
TextEncoder = Callable[[str], list[int]]


@dataclass
class LabelItem:
    """One claim to label, with what the labeler needs to see."""

    claim: Claim
    images: list[Any] = field(default_factory=list)  # the prompt's media: PIL images (and `Video`s)
    scene: str | None = None  # Shapes scene JSON (the oracle labeler's ground truth)


@dataclass
class ClaimLabel:
    """The labeler's judgement of one claim."""

    claim: Claim
    accepted: bool
    p_yes: float  # p(yes) + p(Yes); the oracle writes 1.0/0.0
    p_no: float  # p(no) + p(No)
    error: str | None = None  # set → unparseable: neither accepted nor rejected
    source: str = "self"  # "self" | "model:<path>" | "oracle"

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def rejected(self) -> bool:
        return self.error is None and not self.accepted

    @property
    def verdict(self) -> str:
        """ "accepted" | "rejected" | "unparseable"."""
        if self.error is not None:
            return "unparseable"
        return "accepted" if self.accepted else "rejected"

    @property
    def oracle(self) -> bool:
        return self.source == "oracle"


@runtime_checkable
class Labeler(Protocol):
    """Labels a batch of claims; one label per item, in order; per-claim failures never raise."""

    source: str

    def label(self, items: Sequence[LabelItem]) -> list[ClaimLabel]: ...


def claim_messages(text: str, media: Sequence[Any] = (), media_last: bool = False) -> list[dict[str, Any]]:
    """The labeler's user turn: `text` alone (the renderer puts the media first), or with
    `media_last` the text followed by one block per image / video of `media`."""
    if not media_last:
        return [{"role": "user", "content": text}]
    images, videos = split_media(list(media))
    blocks = [{"type": "text", "text": text}, *({"type": "image"} for _ in images), *({"type": "video"} for _ in videos)]
    return [{"role": "user", "content": blocks}]


def verdict_label(claim: Claim, verdict: bool | None, source: str, unknown: str) -> ClaimLabel:
    """The label of a checked claim (probabilities 1/0); unparseable with `unknown` when None."""
    if verdict is None:
        return _unparseable(claim, unknown, source)
    p = 1.0 if verdict else 0.0
    return ClaimLabel(claim, verdict, p, 1.0 - p, source=source)


def _unparseable(claim: Claim, error: str, source: str) -> ClaimLabel:
    return ClaimLabel(claim, accepted=False, p_yes=math.nan, p_no=math.nan, error=error, source=source)


# ----------------------------------------------------------------------------- the math


def word_logprob(token_logprobs: Sequence[float]) -> float:
    """log p(word | prompt) = Σ_i log p(token_i | prompt, tokens_<i) (chain rule).

    A positive total (numerical noise) is clipped to 0; NaN propagates (the caller treats it as
    unparseable); -inf means probability 0.
    """
    total = math.fsum(float(x) for x in token_logprobs)
    return min(total, 0.0) if not math.isnan(total) else math.nan


def yes_no_probs(yes_logprobs: Sequence[float], no_logprobs: Sequence[float]) -> tuple[float, float]:
    """(P_yes, P_no) = (Σ exp(log p) over the yes spellings, the same over the no spellings).

    Raises ValueError on a NaN or +inf log-prob, or when every spelling has probability 0 —
    the "unparseable" outcome.
    """
    values = [*yes_logprobs, *no_logprobs]
    if any(math.isnan(v) or v == math.inf for v in values):
        raise ValueError("non-finite log-prob")
    p_yes = math.fsum(math.exp(v) for v in yes_logprobs)
    p_no = math.fsum(math.exp(v) for v in no_logprobs)
    if p_yes == 0.0 and p_no == 0.0:
        raise ValueError("no finite log-probs: every answer word has probability 0")
    return p_yes, p_no


def accept(p_yes: float, p_no: float) -> bool:
    """RLAIF-V's rule: the claim holds iff P_yes > P_no (a tie is a rejection)."""
    return p_yes > p_no


# ----------------------------------------------------------------------------- model labeler


def _distinct(encoded: Sequence[tuple[str, list[int]]]) -> list[tuple[str, tuple[int, ...]]]:
    """Drop empty and repeated token sequences (a lower-casing tokenizer maps yes/Yes alike)."""
    out: list[tuple[str, tuple[int, ...]]] = []
    for word, ids in encoded:
        key = tuple(int(t) for t in ids)
        if key and key not in [k for _, k in out]:
            out.append((word, key))
    return out


@dataclass
class _Plan:
    """The score requests of one distinct (question, images)."""

    yes_slots: list[int]
    no_slots: list[int]


class ProbabilityLabeler:
    """Yes/no labels from answer-word probabilities through a `Scorer` (see the module doc).

    Args:
        scorer: a `rollouts.protocol.Scorer` on the labeler model (the policy for `self`).
        encode_prompt: `(messages, images, mode) -> prompt ids` with image tokens expanded, e.g.
            `functools.partial(policies.chat.encode_prompt, processor)`.
        encode_text: `text -> ids` without special tokens (the answer words).
        source: recorded in every label ("self" or "model:<path>").
        temperature: logits / temperature before the softmax (1.0: the model's distribution).
        media_last: put the question before the image(s) in the user turn (default: media first,
            the chat convention). A small labeler trained that way reads the image already knowing
            what to look for (`rl.train_labeler`).

    One `scorer.score` call per `label` call. Items asking the same question about the same
    images (the same claim in several samples of a prompt) are scored once.
    """

    def __init__(
        self,
        scorer: Any,
        encode_prompt: PromptEncoder,
        encode_text: TextEncoder,
        source: str = "self",
        temperature: float = 1.0,
        suffix: str = ANSWER_SUFFIX,
        media_last: bool = False,
    ):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.scorer = scorer
        self.encode_prompt = encode_prompt
        self.encode_text = encode_text
        self.source = source
        self.temperature = float(temperature)
        self.suffix = suffix
        self.media_last = media_last
        self._words: tuple[list[tuple[str, tuple[int, ...]]], list[tuple[str, tuple[int, ...]]]] | None = None

    @classmethod
    def from_processor(cls, scorer: Any, processor: Any, **kwargs: Any) -> ProbabilityLabeler:
        """A labeler rendering prompts with `policies.chat.encode_prompt` and `processor`."""
        from policies.chat import encode_prompt

        tokenizer = getattr(processor, "tokenizer", processor)

        def encode(messages: list[dict[str, Any]], media: list[Any], mode: str) -> list[int]:
            images, videos = split_media(list(media))
            return encode_prompt(processor, messages, images, mode, videos)

        return cls(
            scorer,
            encode_prompt=encode,
            encode_text=lambda text: list(tokenizer.encode(text, add_special_tokens=False)),
            **kwargs,
        )

    def answer_words(self) -> tuple[list[tuple[str, tuple[int, ...]]], list[tuple[str, tuple[int, ...]]]]:
        """(yes spellings, no spellings) as distinct (word, token ids), encoded once."""
        if self._words is None:
            yes = _distinct([(w, self.encode_text(w)) for w in YES_WORDS])
            no = _distinct([(w, self.encode_text(w)) for w in NO_WORDS])
            if not yes or not no or set(k for _, k in yes) & set(k for _, k in no):
                raise ValueError(f"the tokenizer cannot tell the answer words apart: yes={yes}, no={no}")
            self._words = (yes, no)
        return self._words

    def messages(self, question: str, media: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return claim_messages(question.strip() + self.suffix, media, self.media_last)

    def _prompt(self, item: LabelItem, memo: dict[int, str]) -> tuple[str, list[int], list[Any]]:
        """(dedupe key, prompt ids, images) of one item; raises when the prompt cannot be built."""
        images = list(item.images or [])
        key = f"{item.claim.question}\x00{images_key(images, memo)}"
        prompt_ids = list(self.encode_prompt(self.messages(item.claim.question, images), images, LABEL_MODE))
        if not prompt_ids:
            raise ValueError("empty prompt")
        return key, prompt_ids, images

    def _add_requests(self, prompt_ids: list[int], images: list[Any], requests: list[ScoreRequest]) -> _Plan:
        yes, no = self.answer_words()
        slots: list[list[int]] = [[], []]
        for side, spellings in enumerate((yes, no)):
            for word, ids in spellings:
                slots[side].append(len(requests))
                pictures, videos = split_media(images)
                requests.append(
                    ScoreRequest(
                        token_ids=prompt_ids + list(ids),
                        images=pictures,
                        target_start=len(prompt_ids),
                        temperature=self.temperature,
                        request_id=f"label-{len(requests)}-{word}",
                        videos=videos,
                    )
                )
        return _Plan(slots[0], slots[1])

    def label(self, items: Sequence[LabelItem]) -> list[ClaimLabel]:
        requests: list[ScoreRequest] = []
        plans: dict[str, _Plan] = {}
        item_plans: list[_Plan | str] = []  # a plan, or the error that stopped this item
        memo: dict[int, str] = {}
        for item in items:
            try:
                key, prompt_ids, images = self._prompt(item, memo)
            except Exception as exc:  # noqa: BLE001 - e.g. an image that fails to load
                item_plans.append(f"prompt: {type(exc).__name__}: {exc}")
                continue
            if key not in plans:
                plans[key] = self._add_requests(prompt_ids, images, requests)
            item_plans.append(plans[key])
        results = self.scorer.score(requests) if requests else []
        if len(results) != len(requests):
            raise RuntimeError(f"scorer returned {len(results)} results for {len(requests)} requests")
        word_lps = [self._word_lp(req, res) for req, res in zip(requests, results, strict=True)]
        return [self._judge(item, plan, word_lps) for item, plan in zip(items, item_plans, strict=True)]

    @staticmethod
    def _word_lp(req: ScoreRequest, res: Any) -> float | str:
        """log p(word | prompt), or the error text."""
        expected = len(req.token_ids) - req.target_start
        if res.error is not None:
            return f"scorer: {res.error}"
        if len(res.logprobs) != expected:
            return f"scorer: expected {expected} log-probs, got {len(res.logprobs)}"
        return word_logprob(res.logprobs)

    def _judge(self, item: LabelItem, plan: _Plan | str, word_lps: list[float | str]) -> ClaimLabel:
        if isinstance(plan, str):
            return _unparseable(item.claim, plan, self.source)
        yes = [word_lps[i] for i in plan.yes_slots]
        no = [word_lps[i] for i in plan.no_slots]
        errors = [v for v in yes + no if isinstance(v, str)]
        if errors:
            return _unparseable(item.claim, errors[0], self.source)
        try:
            p_yes, p_no = yes_no_probs(yes, no)  # type: ignore[arg-type]
        except ValueError as exc:
            return _unparseable(item.claim, str(exc), self.source)
        return ClaimLabel(item.claim, accept(p_yes, p_no), p_yes, p_no, source=self.source)


# ----------------------------------------------------------------------------- oracle


def _matching(scene: Scene, colour: str | None, shape: str | None) -> list[SceneObject]:
    return [
        o
        for o in scene.objects
        if (colour is None or o.colour == colour) and (shape is None or o.shape == shape)
    ]


def _check_one(c: Claim, scene: Scene) -> bool | None:
    """Truth of one parsed Shapes claim in `scene` (None: not a kind the oracle knows)."""
    objs = _matching(scene, c.colour, c.shape)
    if c.kind == "object":
        return not objs if c.negated else bool(objs)
    if c.kind == "count" and c.count is not None:
        return (len(objs) == c.count) != c.negated
    if c.kind == "attribute" and c.attribute in ("position", "size", "colour"):
        if c.attribute == "position":
            holds = any(o.position == c.position for o in objs)
        elif c.attribute == "size":
            holds = any(o.size == c.size for o in objs)
        else:  # colour is already one of the matched fields
            holds = bool(objs)
        return bool(objs) and (not holds if c.negated else holds)  # no referent: false either way
    if c.kind == "relation" and c.relation is not None:
        others = _matching(scene, c.other_colour, c.other_shape)
        holds = any(c.relation in relations(a, b) for a in objs for b in others if a is not b)
        exist = any(a is not b for a in objs for b in others)
        return exist and (not holds if c.negated else holds)
    return None


def check_claim(claim: Claim, scene: Scene) -> bool | None:
    """Ground truth of `claim` in a Shapes `scene`; None when it cannot be checked.

    A claim with parsed fields is checked directly. A free-text claim (model splitter) is
    parsed with the Shapes parser and holds iff all its parts hold; words the parser does not
    read are not checked, and a text with no readable part gives None.
    """
    verdicts = [_check_one(c, scene) for c in iter_subclaims(claim)]
    if not verdicts or any(v is None for v in verdicts):
        return None
    return all(verdicts)


class OracleLabeler:
    """Ground-truth labels from the Shapes scene (ablations only; labels say `source="oracle"`).

    An item without a readable scene, or a claim the oracle cannot check, is unparseable.
    """

    source = "oracle"

    def label(self, items: Sequence[LabelItem]) -> list[ClaimLabel]:
        out = []
        cache: dict[str, Scene] = {}
        for item in items:
            try:
                if not item.scene:
                    raise ValueError("item has no scene")
                if item.scene not in cache:
                    cache[item.scene] = Scene.from_json(item.scene)
                verdict = check_claim(item.claim, cache[item.scene])
            except Exception as exc:  # noqa: BLE001 - a bad scene row must not end the round
                out.append(_unparseable(item.claim, f"oracle: {type(exc).__name__}: {exc}", self.source))
                continue
            out.append(verdict_label(item.claim, verdict, self.source, "oracle: claim cannot be checked"))
        return out


def make_labeler(
    spec: str,
    scorer: Any = None,
    encode_prompt: PromptEncoder | None = None,
    encode_text: TextEncoder | None = None,
    temperature: float = 1.0,
) -> Labeler:
    """The labeler named by config: "self" and "model:<path>" need a scorer (the policy's, or
    one the pipeline built for that model) and encoders; "oracle" needs nothing."""
    kind, _target = parse_labeler_spec(spec)
    if kind == "oracle":
        return OracleLabeler()
    if scorer is None or encode_prompt is None or encode_text is None:
        raise ValueError(f"labeler {spec!r} needs a scorer, encode_prompt and encode_text")
    return ProbabilityLabeler(scorer, encode_prompt, encode_text, source=spec, temperature=temperature)


# ----------------------------------------------------------------------------- reporting


@dataclass
class LabelCounts:
    """How a batch of claims was judged."""

    n: int = 0
    accepted: int = 0
    rejected: int = 0
    unparseable: int = 0


def count_labels(labels: Sequence[ClaimLabel]) -> LabelCounts:
    counts = LabelCounts(n=len(labels))
    for lab in labels:
        setattr(counts, lab.verdict, getattr(counts, lab.verdict) + 1)
    return counts


def labeler_agreement(labels: Sequence[ClaimLabel], oracle_labels: Sequence[ClaimLabel]) -> dict[str, Any]:
    """Agreement of a labeler with ground truth on the same claims (aligned lists).

    Claims unparseable on either side are left out (counted in `skipped`). "Positive" is a
    rejection (a hallucination caught): `rejection_precision` = share of the labeler's
    rejections that are false claims, `rejection_recall` = share of false claims it rejected,
    `true_claims_accepted` = share of true claims it accepted; `balanced_accuracy` is the mean
    of the last two.
    A ratio with a zero denominator is None.
    """
    if len(labels) != len(oracle_labels):
        raise ValueError(f"{len(labels)} labels but {len(oracle_labels)} oracle labels")
    for i, (a, b) in enumerate(zip(labels, oracle_labels, strict=True)):
        if a.claim != b.claim:
            raise ValueError(
                f"label {i} is about {a.claim.text!r} but its oracle label about {b.claim.text!r}"
            )
    both = [(a, b) for a, b in zip(labels, oracle_labels, strict=True) if a.ok and b.ok]
    n = len(both)
    agree = sum(a.accepted == b.accepted for a, b in both)
    lab_rej = sum(a.rejected for a, _ in both)
    true_rej = sum(b.rejected for _, b in both)
    hits = sum(a.rejected and b.rejected for a, b in both)
    true_acc = sum(a.accepted and b.accepted for a, b in both)

    def ratio(num: int, den: int) -> float | None:
        return num / den if den else None

    recall_true, recall_false = ratio(true_acc, n - true_rej), ratio(hits, true_rej)
    return {
        "n": n,
        "skipped": len(labels) - n,
        "accuracy": ratio(agree, n),
        # mean of the accuracies on true and on false claims: what `accuracy` would be on a balanced
        # set (an accept-everything labeler scores 0.5 whatever the share of true claims)
        "balanced_accuracy": (recall_true + recall_false) / 2 if None not in (recall_true, recall_false) else None,
        "true_claims_accepted": recall_true,
        "rejection_precision": ratio(hits, lab_rej),
        "rejection_recall": ratio(hits, true_rej),
        "labeler_rejection_rate": ratio(lab_rej, n),
        "oracle_rejection_rate": ratio(true_rej, n),
    }
