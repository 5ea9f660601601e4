"""Small text utilities shared by the RLAIF-V claim splitters and hallucination metrics.

Responses are matched word by word in lower case; the think block of a deep-mode response is
reasoning, not a claim about the image, so it is stripped before anything is parsed.
"""

from __future__ import annotations

import re

from policies.chat import THINK_CLOSE, THINK_OPEN

NUMBER_WORDS: dict[str, int] = {
    "zero": 0,
    "one": 1,
    "single": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
_NUMBER_NAMES = {v: k for k, v in NUMBER_WORDS.items() if k != "single"}
_WORD_RE = re.compile(r"[a-z0-9]+")
# Sentence ends: . ! ? ; : and line breaks (a period inside a number such as "2.5" is kept).
_SENTENCE_RE = re.compile(r"(?<!\d)[.!?;:](?!\d)|\n+")


def strip_think(text: str) -> str:
    """The answer part of a completion: the text after the last `</think>`.

    With no `</think>` but an opening `<think>` (a deep-mode response cut off mid-reasoning),
    only the text before `<think>` counts (usually nothing): unfinished reasoning is not an
    answer. Text with neither tag is returned as is.
    """
    if THINK_CLOSE in text:
        return text.rsplit(THINK_CLOSE, 1)[1]
    if THINK_OPEN in text:
        return text.split(THINK_OPEN, 1)[0]
    return text


def words(text: str) -> list[str]:
    """Lower-case alphanumeric words of `text` ("top-left" → ["top", "left"])."""
    return _WORD_RE.findall(text.lower())


def sentences(text: str) -> list[str]:
    """Non-empty sentences/clauses of `text`, split at . ! ? ; : and line breaks."""
    return [s.strip() for s in _SENTENCE_RE.split(text) if s and s.strip()]


def parse_number(word: str) -> int | None:
    """An integer from a digit string or a number word ("3", "three"); None otherwise."""
    if word.isdigit():
        return int(word)
    return NUMBER_WORDS.get(word)


def number_name(n: int) -> str:
    """ "three" for 3 (digits above ten)."""
    return _NUMBER_NAMES.get(n, str(n))


def plural_forms(word: str) -> list[str]:
    """Regular English plurals of `word`: +s, +es (box → boxes), y → ies. Irregular plurals
    (person → people) belong in a synonym table."""
    forms = [word + "s"]
    if word.endswith(("s", "x", "z", "ch", "sh")):
        forms.append(word + "es")
    if len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
        forms.append(word[:-1] + "ies")
    return forms
