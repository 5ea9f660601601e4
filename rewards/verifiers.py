"""Answer extraction and rule verifiers for short answers, and the `rule_accuracy` reward.

The verifiers are pure string functions: normalised exact match (SQuAD-style normalisation:
case, punctuation, articles, whitespace), numbers with a tolerance (number words zero..ten read as
digits), yes/no (the first yes/no word), and multiple choice (a letter A-E written as "B", "(B)",
"B.", "B)", "B: text" or "the answer is B"). MiniCPM-V 4.5 (arXiv 2509.18154) scores short
answers with rule verifiers and free-form ones with RLPR; this module is the rule half.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

from policies.chat import THINK_CLOSE, THINK_OPEN
from rewards.common import column, completion_texts

QTYPES = ("yesno", "number", "choice", "text")
_QTYPE_ALIASES = {
    "yesno": "yesno", "yes_no": "yesno", "yes/no": "yesno", "binary": "yesno",
    "number": "number", "numeric": "number", "num": "number", "count": "number",
    "choice": "choice", "multiple_choice": "choice", "mc": "choice", "mcq": "choice",
    "text": "text", "open": "text", "short": "text", "exact": "text",
}  # fmt: skip

NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
}  # fmt: skip
CHOICE_LETTERS = "ABCDE"

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT_TABLE = str.maketrans({c: " " for c in string.punctuation})
_NUMBER = re.compile(
    r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?%?(?!\d)"
    r"|(?<![\w.])[-+]?\.\d+%?(?!\d)"
)
_NUMBER_WORD = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)
_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_CHOICE_PATTERNS = (
    # "the answer is (B)", "answer: B", "option B", "choice: (C)"
    re.compile(
        r"(?i:\b(?:answer|option|choice)\s*(?:is\s*:?|:)?\s*(?:option\s*)?)[(\[]?([A-E])[)\].:]?(?!\w)"
    ),
    # the whole answer is the letter: "B", "(B)", "B.", "B)", "[B]"
    re.compile(r"^\s*[(\[]?([A-E])[)\].:]?\s*$"),
    # the answer starts with a marked letter: "B. cat", "(B) cat", "B) cat", "B: cat"
    re.compile(r"^\s*(?:\(([A-E])\)|\[([A-E])\]|([A-E])[.):])(?:\s|$)"),
    # a parenthesised letter anywhere: "I think (C) fits"
    re.compile(r"\(([A-E])\)"),
)


def extract_answer(completion: str) -> str:
    """The final answer: the text after the last `</think>` if there is one, else all; stripped.

    One exception (our choice): a text with a `<think>` but no `</think>` at all is unfinished
    reasoning (typically a deep-mode completion cut at the token limit) and has no answer -> "".
    Otherwise "<think>... is it a dog? no... yes" would be graded on its reasoning.
    """
    text = completion or ""
    idx = text.rfind(THINK_CLOSE)
    if idx >= 0:
        return text[idx + len(THINK_CLOSE) :].strip()
    if THINK_OPEN in text:
        return ""
    return text.strip()


def normalize_text(text: str) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, collapse whitespace (SQuAD style).

    Unicode punctuation (category P*) is dropped too, after NFKC normalisation.
    """
    text = unicodedata.normalize("NFKC", text or "").lower()
    text = text.translate(_PUNCT_TABLE)
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> bool:
    """Normalised exact match; an empty reference matches nothing."""
    ref = normalize_text(reference)
    return bool(ref) and normalize_text(prediction) == ref


def token_f1(prediction: str, reference: str) -> float:
    """Word-overlap F1 of the normalised texts (SQuAD-style partial credit for free-form answers)."""
    pred, ref = normalize_text(prediction).split(), normalize_text(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def phrase_match(prediction: str, reference: str, max_words: int = 10) -> bool:
    """True iff the normalised reference occurs as a whole-word phrase in a short prediction.

    "Short" means the normalised prediction has at most `max_words` words, so that a long answer
    listing many candidates cannot collect the reward. "a red car." matches "red car"; "scarlet"
    does not match "car" (whole words only).
    """
    ref = normalize_text(reference)
    pred = normalize_text(prediction)
    if not ref or not pred or len(pred.split()) > max_words:
        return False
    return f" {ref} " in f" {pred} "


def _to_float(token: str) -> float | None:
    token = token.replace(",", "")
    percent = token.endswith("%")
    token = token.rstrip("%")
    try:
        if "/" in token:
            num, den = token.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(token)
    except (ValueError, ZeroDivisionError):
        return None
    return value / 100.0 if percent else value


def parse_number(text: str) -> float | None:
    """The number an answer states, or None.

    Number words zero..ten are read as digits first. If the whole answer is one number (after
    stripping surrounding punctuation/whitespace) that is it; otherwise the *last* number in the
    text (answers tend to end with their result: "... so there are 4"). Accepts signs, thousands
    separators ("1,000"), decimals, simple fractions ("3/4") and percentages ("50%" = 0.5).
    """
    text = _NUMBER_WORD.sub(lambda m: str(NUMBER_WORDS[m.group(1).lower()]), text or "")
    matches = _NUMBER.findall(text)
    if not matches:
        return None
    return _to_float(matches[-1])


def numbers_match(prediction: str, reference: str, rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> bool:
    """True iff both parse to numbers within `math.isclose(rel_tol, abs_tol)`.

    A reference given as a percentage ("50%") also accepts the bare number ("50") and vice versa.
    """
    pred, ref = parse_number(prediction), parse_number(reference)
    if pred is None or ref is None:
        return False
    if math.isclose(pred, ref, rel_tol=rel_tol, abs_tol=abs_tol):
        return True
    pred_pct, ref_pct = "%" in (prediction or ""), "%" in (reference or "")
    if pred_pct != ref_pct:
        scale = 0.01 if ref_pct else 100.0  # "50" vs "50%" (= 0.5); "50%" vs "50"
        return math.isclose(pred * scale, ref, rel_tol=rel_tol, abs_tol=abs_tol)
    return False


def parse_yes_no(text: str) -> str | None:
    """ "yes" or "no": the first whole word yes/no (any case) in the text, else None."""
    m = _YES_NO.search(text or "")
    return m.group(1).lower() if m else None


def parse_choice(text: str) -> str | None:
    """The chosen letter A-E, or None.

    Tried in order: an explicit "answer/option/choice (is|:) X"; the whole answer being the letter
    ("B", "(B)", "B.", "B)"); an answer starting with a marked letter ("B. cat", "(B) cat");
    a parenthesised letter anywhere. A bare capital "A" inside a sentence ("A dog runs") is not
    taken for a choice.
    """
    text = (text or "").replace("*", "")  # markdown bold: "**B**"
    for pattern in _CHOICE_PATTERNS:
        m = pattern.search(text)
        if m:
            letter = next(g for g in m.groups() if g)
            return letter.upper()
    return None


def infer_qtype(reference: str) -> str:
    """Which verifier a reference calls for: yesno, number, choice or text."""
    ref = (reference or "").strip()
    norm = normalize_text(ref)
    if norm in ("yes", "no"):
        return "yesno"
    if re.fullmatch(r"[(\[]?[A-E][)\].:]?", ref):
        return "choice"
    if norm in NUMBER_WORDS or (_NUMBER.fullmatch(ref.rstrip(".")) is not None):
        return "number"
    return "text"


def canonical_qtype(qtype: str | None, reference: str) -> str:
    """The verifier name for a row: the `qtype` column (aliases accepted) or inferred from the answer."""
    if qtype:
        found = _QTYPE_ALIASES.get(str(qtype).strip().lower())
        if found:
            return found
    return infer_qtype(reference)


def verify(
    prediction: str,
    reference: str,
    qtype: str | None = None,
    *,
    rel_tol: float = 1e-4,
    phrase_max_words: int = 10,
) -> bool:
    """True iff the extracted answer `prediction` is correct for `reference` under `qtype`."""
    kind = canonical_qtype(qtype, reference)
    if kind == "yesno":
        ref = parse_yes_no(reference)
        return ref is not None and parse_yes_no(prediction) == ref
    if kind == "number":
        return numbers_match(prediction, reference, rel_tol=rel_tol)
    if kind == "choice":
        ref = parse_choice(reference) or (reference or "").strip().upper()
        return parse_choice(prediction) == ref
    return exact_match(prediction, reference) or phrase_match(prediction, reference, phrase_max_words)


class RuleAccuracy:
    """Rule-verified accuracy reward: 1.0 if the final answer is correct, 0.0 if not.

    Columns: `answer` (the reference, required; a row whose answer is None gets None, TRL's "not
    applicable") and optional `qtype` (yesno/number/choice/text or an alias; inferred from the
    answer when absent). The answer is `extract_answer(completion)`: text after the last
    `</think>`, so reasoning never counts. Text references accept a normalised exact match or the
    reference as a whole phrase inside an answer of at most `phrase_max_words` words.
    """

    def __init__(self, rel_tol: float = 1e-4, phrase_max_words: int = 10):
        if rel_tol < 0 or phrase_max_words < 1:
            raise ValueError("rel_tol must be >= 0 and phrase_max_words >= 1")
        self.rel_tol = float(rel_tol)
        self.phrase_max_words = int(phrase_max_words)
        self.__name__ = "rule_accuracy"

    def score_one(self, completion: str, reference: Any, qtype: str | None = None) -> float | None:
        """The reward of one completion text (None without a reference).

        A list of references accepts any of them (datasets with several valid answers).
        """
        if reference is None:
            return None
        refs = list(reference) if isinstance(reference, (list, tuple)) else [reference]
        answer = extract_answer(completion)
        ok = any(
            verify(answer, str(ref), qtype, rel_tol=self.rel_tol, phrase_max_words=self.phrase_max_words)
            for ref in refs
            if ref is not None
        )
        return 1.0 if ok else 0.0

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        texts = completion_texts(completions)
        answers = column(columns, "answer", len(texts))
        qtypes = column(columns, "qtype", len(texts))
        return [self.score_one(t, a, q) for t, a, q in zip(texts, answers, qtypes, strict=True)]


rule_accuracy = RuleAccuracy()
