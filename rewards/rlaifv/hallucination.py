"""Object hallucination metrics: CHAIRs, CHAIRi, Cover and Hal% (pure functions).

CHAIR (Rohrbach et al., 2018), as reported by RLAIF-V (arXiv 2405.17220) on Object HalBench,
and AMBER's Cover and Hal (Wang et al., 2023):

    CHAIRs = responses with ≥ 1 hallucinated object / responses mentioning ≥ 1 known object
    CHAIRi = hallucinated object mentions / object mentions            (pooled over responses)
    Cover  = share of the ground-truth objects a response mentions     (mean over responses)
    Hal%   = 100 · responses with ≥ 1 hallucinated object / responses

Generic interface: a response, its ground-truth object list, and an `ObjectVocabulary`
(canonical object → surface words, multi-word allowed; regular plurals are matched
automatically, irregular ones belong in the table) — COCO-style object lists work as they are.
`shapes_vocabulary()` builds the table for the embedded Shapes dataset: an object is a
"colour shape" phrase with synonyms for both ("violet box" = "purple square"); a bare shape word
("a circle", "two circles") mentions that shape and is hallucinated iff no object of that shape
exists (the vocabulary's `parents` say "red circle" implies "circle").

Choices (stated, not from the papers): think blocks are stripped first; each object counts once
per response however often it is named (AMBER-style sets; CHAIR's reference code counts
repeats); a mention right after "no" / "not a" is a negation, not a mention; a bare shape does
not cover a specific ground-truth object; ratios with a zero denominator are 0.0 (the counts
returned beside them show when that happened).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from rewards.rlaifv.text import plural_forms, strip_think, words

_NEGATORS = ("no",)
_NEGATED_ARTICLES = ("a", "an", "any")
_NOT_WORDS = ("not", "t", "never")  # "isn't" reads as "isn", "t"


@dataclass(frozen=True)
class ObjectVocabulary:
    """Canonical object names, the words that name them, and which objects imply which.

    `synonyms`: canonical → surface forms (the canonical name always counts as one).
    `parents`: canonical → a broader canonical it implies ("red circle" → "circle"), so the
    presence of a red circle makes a bare "circle" mention true.
    """

    synonyms: Mapping[str, Sequence[str]]
    parents: Mapping[str, str] = field(default_factory=dict)

    @cached_property
    def table(self) -> dict[tuple[str, ...], str]:
        """Word tuple (singular or plural) → canonical name."""
        out: dict[tuple[str, ...], str] = {}
        for canonical, surfaces in self.synonyms.items():
            for surface in [canonical, *surfaces]:
                ws = tuple(words(surface))
                if not ws:
                    continue
                out.setdefault(ws, canonical)
                for plural in plural_forms(ws[-1]):
                    out.setdefault((*ws[:-1], plural), canonical)
        return out

    @cached_property
    def longest(self) -> int:
        return max((len(k) for k in self.table), default=0)

    def canonical(self, name: str) -> str:
        """The canonical name of an object string (itself when unknown)."""
        if name in self.synonyms:
            return name
        return self.table.get(tuple(words(name)), name.strip().lower())

    def implied(self, names: Iterable[str]) -> set[str]:
        """`names` and everything they imply through `parents`."""
        out: set[str] = set()
        for name in names:
            while name and name not in out:
                out.add(name)
                name = self.parents.get(name, "")
        return out


def as_vocabulary(vocabulary: ObjectVocabulary | Mapping[str, Sequence[str]] | None) -> ObjectVocabulary:
    """An ObjectVocabulary from itself, a plain synonym table, or None (the Shapes vocabulary)."""
    if vocabulary is None:
        return shapes_vocabulary()
    if isinstance(vocabulary, ObjectVocabulary):
        return vocabulary
    return ObjectVocabulary(synonyms={k: list(v) for k, v in vocabulary.items()})


_SHAPES_VOCAB: ObjectVocabulary | None = None


def shapes_vocabulary() -> ObjectVocabulary:
    """The Shapes object vocabulary: "colour shape" objects plus bare shapes (cached)."""
    global _SHAPES_VOCAB
    if _SHAPES_VOCAB is None:
        from rl.data.scenes import COLOURS, SHAPES, SYNONYMS

        synonyms: dict[str, list[str]] = {}
        parents: dict[str, str] = {}
        for shape in SHAPES:
            synonyms[shape] = list(SYNONYMS.get(shape, [shape]))
            for colour in COLOURS:
                name = f"{colour} {shape}"
                synonyms[name] = [f"{c} {s}" for c in SYNONYMS.get(colour, [colour]) for s in synonyms[shape]]
                parents[name] = shape
        _SHAPES_VOCAB = ObjectVocabulary(synonyms=synonyms, parents=parents)
    return _SHAPES_VOCAB


@dataclass(frozen=True)
class Mention:
    """One object named in a response."""

    canonical: str
    text: str  # the words that named it
    start: int  # word index in the (think-stripped) response


def _negated(ws: list[str], i: int) -> bool:
    if i >= 1 and ws[i - 1] in _NEGATORS:
        return True
    return i >= 2 and ws[i - 1] in _NEGATED_ARTICLES and ws[i - 2] in _NOT_WORDS


def object_mentions(
    response: str, vocabulary: ObjectVocabulary | Mapping[str, Sequence[str]] | None = None
) -> list[Mention]:
    """Object mentions of `response` (think block stripped), longest phrase first, in order.

    "red circle" is one mention of "red circle", not also one of "circle"; negated phrases
    ("no green triangle") are skipped.
    """
    vocab = as_vocabulary(vocabulary)
    ws = words(strip_think(response or ""))
    out: list[Mention] = []
    i = 0
    while i < len(ws):
        for n in range(min(vocab.longest, len(ws) - i), 0, -1):
            key = tuple(ws[i : i + n])
            if key in vocab.table:
                if not _negated(ws, i):
                    out.append(Mention(vocab.table[key], " ".join(key), i))
                i += n
                break
        else:
            i += 1
    return out


@dataclass
class ResponseHallucination:
    """The CHAIR bookkeeping of one response."""

    mentioned: list[str]  # distinct canonical objects mentioned, in order of first mention
    hallucinated: list[str]  # those not in (or implied by) the ground truth
    covered: list[str]  # ground-truth objects mentioned
    n_gt: int  # distinct ground-truth objects


def response_hallucination(
    response: str,
    gt_objects: Sequence[str],
    vocabulary: ObjectVocabulary | Mapping[str, Sequence[str]] | None = None,
) -> ResponseHallucination:
    """Which objects `response` mentions, which of them are hallucinated, which truths it covers."""
    vocab = as_vocabulary(vocabulary)
    gt = list(dict.fromkeys(vocab.canonical(g) for g in gt_objects))
    truth = vocab.implied(gt)
    mentioned = list(dict.fromkeys(m.canonical for m in object_mentions(response, vocab)))
    return ResponseHallucination(
        mentioned=mentioned,
        hallucinated=[m for m in mentioned if m not in truth],
        covered=[g for g in gt if g in mentioned],
        n_gt=len(gt),
    )


def chair_metrics(
    responses: Sequence[str],
    gt_objects_per_response: Sequence[Sequence[str]],
    vocabulary: ObjectVocabulary | Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """CHAIRs, CHAIRi, Cover, Hal% and their counts over aligned responses and truths.

    `vocabulary` defaults to the Shapes vocabulary; a plain {canonical: [surface, …]} mapping
    works too. Cover averages per-response coverage over responses with ground-truth objects.
    """
    if len(responses) != len(gt_objects_per_response):
        raise ValueError(f"{len(responses)} responses but {len(gt_objects_per_response)} ground-truth lists")
    vocab = as_vocabulary(vocabulary)
    rows = [
        response_hallucination(r, gt, vocab) for r, gt in zip(responses, gt_objects_per_response, strict=True)
    ]
    n = len(rows)
    with_mentions = sum(bool(r.mentioned) for r in rows)
    hallucinating = sum(bool(r.hallucinated) for r in rows)
    mentions = sum(len(r.mentioned) for r in rows)
    hallucinated = sum(len(r.hallucinated) for r in rows)
    covers = [len(r.covered) / r.n_gt for r in rows if r.n_gt]

    def ratio(num: float, den: float) -> float:
        return num / den if den else 0.0

    return {
        "chair_s": ratio(hallucinating, with_mentions),
        "chair_i": ratio(hallucinated, mentions),
        "cover": ratio(sum(covers), len(covers)),
        "hal": 100.0 * ratio(hallucinating, n),
        "n_responses": n,
        "n_responses_with_mentions": with_mentions,
        "n_responses_hallucinating": hallucinating,
        "n_mentions": mentions,
        "n_hallucinated_mentions": hallucinated,
        "n_gt_objects": sum(r.n_gt for r in rows),
        "n_covered": sum(len(r.covered) for r in rows),
    }
