"""Claims: the atomic, checkable statements of a response, each with its yes/no question.

RLAIF-V's "divide" step (arXiv 2405.17220, §3.2): split a response into atomic, self-contained
factual claims and rewrite each as a yes/no question without changing its content or negation.
`ClaimSplitter` is the protocol; two implementations:

* `ShapesClaimSplitter` (here): a deterministic parser for the embedded Shapes dataset. It reads
  sentences/clauses with the Shapes vocabulary (colour and shape synonyms, plurals) into object,
  attribute (position/size/colour), relation and count claims, in canonical words ("a blue box"
  → "there is a blue square"). Deviation from the paper: no model, a closed vocabulary — words it
  does not know (an "orange star") yield no claim, and unparseable text yields no claims.
* `ModelClaimSplitter` (in `rewards.rlaifv.model_splitter`, importable from here too): prompts
  an instruction model, as the paper does with its fine-tuned
  Llama-3-8B at temperature 0.2, with our prompt templates (`templates/*.txt`), and parses its
  numbered list and questions robustly (what fails to parse is dropped and counted).

The think block of a deep-mode response is stripped first: only the answer is judged.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Protocol, runtime_checkable

from rewards.rlaifv.text import number_name, parse_number, plural_forms, sentences, strip_think, words
from rl.data.scenes import COLOURS, RELATION_PHRASES, SHAPES, SYNONYMS

ClaimKind = Literal["object", "attribute", "relation", "count", "other"]
CLAIM_KINDS: tuple[str, ...] = ("object", "attribute", "relation", "count", "other")


@dataclass(frozen=True)
class Claim:
    """One atomic claim of one response, linked back to it.

    Parsed fields are None where the claim does not constrain them (a bare "circle" has no
    colour). A claim from the model splitter has kind "other" and no parsed fields.
    """

    text: str  # declarative, e.g. "the red circle is at the top left"
    question: str  # yes/no form, e.g. "Is the red circle at the top left?"
    response_index: int  # which sample of its prompt
    prompt_id: str
    kind: ClaimKind = "other"
    colour: str | None = None  # canonical colour of the (subject) object
    shape: str | None = None  # canonical shape of the (subject) object
    attribute: str | None = None  # attribute claims: "position" | "size" | "colour"
    position: str | None = None  # cell name, e.g. "top left"
    size: str | None = None  # "small" | "large"
    relation: str | None = None  # "left" | "right" | "above" | "below" (subject relative to other)
    other_colour: str | None = None  # the relation's second object
    other_shape: str | None = None
    count: int | None = None  # count claims: how many objects match colour/shape
    negated: bool = False  # "there is no green triangle"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class ClaimSplitter(Protocol):
    """Splits one response into claims (never raises: unparseable text gives no claims)."""

    def split(self, response: str, prompt_id: str, response_index: int) -> list[Claim]: ...


# ----------------------------------------------------------------------------- vocabulary

_GENERIC_NOUNS = ("shape", "object", "thing", "item", "figure")
_SIZE_WORDS = {"small": "small", "little": "small", "tiny": "small", "large": "large", "big": "large"}
_VERTICAL = {"top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom"}
_HORIZONTAL = ("left", "right")
_VERTICAL_RELATIONS = {
    "above": "above",
    "below": "below",
    "under": "below",
    "beneath": "below",
    "underneath": "below",
}
_ARTICLES = ("a", "an", "the", "this", "that", "another")
_FILLERS = ("only", "exactly", "just")
_NEGATIONS = ("not", "isn", "aren", "never", "nt")
_PRONOUNS = ("it", "which")


def _build_lexicon() -> tuple[dict[str, str], dict[str, tuple[str | None, bool]]]:
    """(colour surface → canonical, noun surface → (canonical shape or None, plural))."""
    colours = {w: c for c in COLOURS for w in SYNONYMS.get(c, [c])}
    nouns: dict[str, tuple[str | None, bool]] = {}
    for shape in SHAPES:
        for w in SYNONYMS.get(shape, [shape]):
            nouns[w] = (shape, False)
            for p in plural_forms(w):
                nouns.setdefault(p, (shape, True))
    for w in _GENERIC_NOUNS:
        nouns[w] = (None, False)
        for p in plural_forms(w):
            nouns.setdefault(p, (None, True))
    return colours, nouns


_COLOURS, _NOUNS = _build_lexicon()


# ----------------------------------------------------------------------------- phrases


@dataclass(frozen=True)
class _NP:
    """A noun phrase naming one object (or a counted group)."""

    colour: str | None
    shape: str | None
    size: str | None = None
    count: int | None = None  # "two circles", "one shape"
    plural: bool = False
    negated: bool = False  # "no green triangle"

    @property
    def specific(self) -> bool:
        return self.colour is not None or self.shape is not None

    @property
    def single(self) -> bool:
        """Refers to one object, so positions and relations can attach to it."""
        return not self.plural and not self.negated and (self.count in (None, 1)) and self.specific


@dataclass(frozen=True)
class _Item:
    kind: str  # "np" | "pos" | "rel" | "colour" | "size" | "neg" | "pron" | "word"
    value: Any = None


def _parse_np(ws: list[str], i: int) -> tuple[_NP, int] | None:
    """A noun phrase starting at word `i`: [filler] [det|number|no] modifiers* noun."""
    j, n = i, len(ws)
    while j < n and ws[j] in _FILLERS:
        j += 1
    count, negated = None, False
    if j < n and ws[j] in _ARTICLES:
        j += 1
    elif j < n and ws[j] == "no":
        negated, j = True, j + 1
    elif j < n and parse_number(ws[j]) is not None and j + 1 < n and ws[j + 1] not in ("of",):
        count, j = parse_number(ws[j]), j + 1
    colour = size = None
    mods = 0
    while j < n and mods < 3 and (ws[j] in _COLOURS or ws[j] in _SIZE_WORDS):
        if ws[j] in _COLOURS:
            if colour is not None:  # "red and blue" etc.: not one object
                return None
            colour = _COLOURS[ws[j]]
        else:
            size = _SIZE_WORDS[ws[j]]
        j, mods = j + 1, mods + 1
    if j >= n:
        return None
    if ws[j] in _NOUNS:
        shape, plural = _NOUNS[ws[j]]
    elif ws[j] == "one" and colour is not None:  # "a red one"
        shape, plural = None, False
    else:
        return None
    if count is not None and count > 1:
        plural = True
    return _NP(colour, shape, size, count, plural, negated), j + 1


def _tokens(clause: str) -> list[_Item]:
    """The clause as a list of phrase items, left to right."""
    ws = words(clause)
    items: list[_Item] = []
    i = 0
    while i < len(ws):
        w = ws[i]
        nxt = ws[i + 1] if i + 1 < len(ws) else ""
        parsed = _parse_np(ws, i)
        if parsed is not None:
            items.append(_Item("np", parsed[0]))
            i = parsed[1]
            continue
        if w in _VERTICAL and nxt in _HORIZONTAL:
            items.append(_Item("pos", f"{_VERTICAL[w]} {nxt}"))
            i += 2
            continue
        if w in _HORIZONTAL and nxt == "of":
            items.append(_Item("rel", w))
            i += 2
            continue
        if w in _VERTICAL_RELATIONS:
            items.append(_Item("rel", _VERTICAL_RELATIONS[w]))
        elif w in _NEGATIONS:
            items.append(_Item("neg"))
        elif w in _COLOURS:
            items.append(_Item("colour", _COLOURS[w]))
        elif w in _SIZE_WORDS:
            items.append(_Item("size", _SIZE_WORDS[w]))
        elif w in _PRONOUNS:
            items.append(_Item("pron"))
        else:
            items.append(_Item("word", w))
        i += 1
    return items


# ----------------------------------------------------------------------------- claim wording


def _name(colour: str | None, shape: str | None) -> str:
    return " ".join(p for p in (colour, shape or "shape") if p)


def _a(name: str) -> str:
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def _yes_no(text: str, question: str, negated: bool) -> tuple[str, str]:
    """(claim text, question); a negated claim keeps its negation: "Is it true that …?"."""
    if negated:
        return text, f"Is it true that {text}?"
    return text, question[0].upper() + question[1:]


def object_claim(np: _NP) -> tuple[str, str]:
    name = _name(np.colour, np.shape)
    if np.negated:
        return _yes_no(f"there is no {name}", "", True)
    return _yes_no(f"there is {_a(name)}", f"is there {_a(name)}?", False)


def count_claim(np: _NP) -> tuple[str, str]:
    name = _name(np.colour, np.shape)
    n = int(np.count or 0)
    if n == 1:
        return _yes_no(f"there is one {name}", f"is there one {name}?", False)
    return _yes_no(f"there are {number_name(n)} {name}s", f"are there {number_name(n)} {name}s?", False)


def predicate_claim(np: _NP, predicate: str, negated: bool) -> tuple[str, str]:
    """'the <np> is <predicate>' and 'Is the <np> <predicate>?'."""
    name = _name(np.colour, np.shape)
    verb = "is not" if negated else "is"
    return _yes_no(f"the {name} {verb} {predicate}", f"is the {name} {predicate}?", negated)


# ----------------------------------------------------------------------------- the parser


class _ClauseReader:
    """Turns the phrase items of one response into claims (state shared across clauses)."""

    def __init__(self, prompt_id: str, response_index: int):
        self.prompt_id = prompt_id
        self.response_index = response_index
        self.claims: list[Claim] = []
        self._seen: set[tuple] = set()
        self.last_np: _NP | None = None

    def emit(self, text_question: tuple[str, str], kind: ClaimKind, np: _NP, **fields: Any) -> None:
        """Add a claim about `np` unless the same claim (same parsed fields) is already there."""
        fields = {"colour": np.colour, "shape": np.shape, **fields}
        key = (kind, *sorted(fields.items()))
        if key not in self._seen:
            self._seen.add(key)
            text, question = text_question
            self.claims.append(Claim(text, question, self.response_index, self.prompt_id, kind, **fields))

    def _mentioned(self, np: _NP) -> bool:
        """A bare "circle" after "red circle" (or "a red shape" after it) adds nothing new."""
        return any(
            c.kind == "object"
            and not c.negated
            and np.colour in (None, c.colour)
            and np.shape in (None, c.shape)
            for c in self.claims
        )

    def noun_phrase(self, np: _NP, negated: bool) -> None:
        """Existence, count and size claims of one noun phrase."""
        if negated and not np.negated:
            np = replace(np, negated=True)
        if np.negated:
            if np.specific:
                self.emit(object_claim(np), "object", np, negated=True)
        elif np.count is not None:
            self.emit(count_claim(np), "count", np, count=np.count)
        elif not np.plural and np.specific and not self._mentioned(np):
            self.emit(object_claim(np), "object", np)
        if np.size and np.single:
            self.emit(predicate_claim(np, np.size, False), "attribute", np, attribute="size", size=np.size)

    def clause(self, items: list[_Item]) -> None:
        subject: _NP | None = None
        rels: list[str] = []
        neg = False
        for item in items:
            if item.kind == "np":
                np = item.value
                self.noun_phrase(np, neg and not rels)
                if rels and subject is not None and np.single:
                    for rel in rels:
                        self.relation(subject, rel, np, neg)
                rels, neg = [], False
                subject = np if np.single else None
                if subject is not None:
                    self.last_np = subject
            elif item.kind == "pron" and subject is None:
                subject = self.last_np
            elif item.kind == "neg":
                neg = True
            elif item.kind == "rel":
                rels.append(item.value)
            elif subject is not None and item.kind in ("pos", "size", "colour"):
                self.attribute(subject, item.kind, item.value, neg)
                neg = False

    def attribute(self, subject: _NP, kind: str, value: str, neg: bool) -> None:
        if kind == "pos":
            tq = predicate_claim(subject, f"at the {value}", neg)
            self.emit(tq, "attribute", subject, attribute="position", position=value, negated=neg)
        elif kind == "size":
            tq = predicate_claim(subject, value, neg)
            self.emit(tq, "attribute", subject, attribute="size", size=value, negated=neg)
        elif subject.colour is None and subject.shape is not None:  # "the circle is red"
            tq = predicate_claim(subject, value, neg)
            self.emit(tq, "attribute", replace(subject, colour=value), attribute="colour", negated=neg)

    def relation(self, a: _NP, rel: str, b: _NP, neg: bool) -> None:
        phrase = f"{RELATION_PHRASES[rel]} the {_name(b.colour, b.shape)}"
        self.emit(
            predicate_claim(a, phrase, neg),
            "relation",
            a,
            relation=rel,
            other_colour=b.colour,
            other_shape=b.shape,
            negated=neg,
        )


def parse_shapes_claims(response: str, prompt_id: str = "", response_index: int = 0) -> list[Claim]:
    """Claims of a Shapes response (think block stripped), in reading order, de-duplicated.

    Object claims come from noun phrases ("a red circle", "a blue box" → square), positions from
    "top/bottom left/right" after a phrase, relations from "left/right of", "above", "below"
    (and "above and to the left of" → two claims), counts from numbers ("three shapes", "two
    circles"), sizes and colours from adjectives ("the circle is red"), "no"/"not" negate. "it"
    and "which" refer to the last single object. Every object mention yields one existence claim
    per response. Text it cannot read yields nothing.
    """
    reader = _ClauseReader(prompt_id, response_index)
    for clause in sentences(strip_think(response)):
        reader.clause(_tokens(clause))
    return reader.claims


class ShapesClaimSplitter:
    """Deterministic claim splitter for the embedded Shapes dataset (see `parse_shapes_claims`).

    `failures` counts responses on which the parser itself raised (a bug guard: such a response
    gets no claims rather than ending the round).
    """

    name = "shapes"

    def __init__(self) -> None:
        self.failures = 0

    def split(self, response: str, prompt_id: str, response_index: int) -> list[Claim]:
        try:
            return parse_shapes_claims(response or "", prompt_id, response_index)
        except Exception:  # noqa: BLE001 - a parser bug must not end a round
            self.failures += 1
            return []

    def split_many(self, items: list[tuple[str, str, int]]) -> list[list[Claim]]:
        """`split` of each (response, prompt_id, response_index)."""
        return [self.split(*item) for item in items]


def iter_subclaims(claim: Claim) -> Iterator[Claim]:
    """The Shapes claims inside a free-text claim (e.g. one written by the model splitter);
    the claim itself when it already has parsed fields."""
    if claim.kind != "other":
        yield claim
        return
    yield from parse_shapes_claims(claim.text, claim.prompt_id, claim.response_index)


__all__ = [
    "CLAIM_KINDS",
    "Claim",
    "ClaimKind",
    "ClaimSplitter",
    "ShapesClaimSplitter",
    "iter_subclaims",
    "parse_shapes_claims",
]


def __getattr__(name: str) -> Any:
    # The model splitter has its own module (it imports this one); re-exported lazily.
    if name in ("ModelClaimSplitter", "SplitStats"):
        from rewards.rlaifv import model_splitter

        return getattr(model_splitter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
