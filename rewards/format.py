"""Mode-aware format reward and the n-gram repetition penalty.

Format (MiniCPM-V 4.5, arXiv 2509.18154, section on hybrid RL: "deep needs exactly one think
block and a non-empty answer; fast needs no non-empty think content"):

- deep: after optional leading whitespace the completion starts with `<think>`, holds exactly
  one `<think>` and one `</think>` (so nothing nested or repeated), the think content is not
  blank, and the answer after `</think>` is not blank -> 1.0, else 0.0.
- fast: the prompt already ends with the pre-filled empty think block, so the completion is the
  answer. Empty think blocks (`<think>` + whitespace + `</think>`, e.g. the model echoing the
  prefill) are tolerated and removed; any other `<think>`/`</think>` left means think content
  or a broken tag -> 0.0; otherwise the answer must not be blank -> 1.0.

Repetition (RLPR, arXiv 2506.18254, reference defaults): -1.0 when any window of 10
whitespace-separated words occurs at least 10 times in the completion (windows may overlap),
else 0.0. Deviation: the RLPR reference code adds the penalty only when the rest of the reward
is non-zero; we apply it always, as a separate additive component, so a degenerate completion is
penalised even when it is also wrong.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from policies.chat import THINK_CLOSE, THINK_OPEN
from rewards.common import completion_texts, modes_column

_EMPTY_THINK = re.compile(re.escape(THINK_OPEN) + r"\s*" + re.escape(THINK_CLOSE))
_HASH_BASE = np.uint64(1_000_003)  # odd multiplier of the polynomial window hash


def deep_format_ok(text: str) -> bool:
    """True iff `text` is `<think>` non-blank reasoning `</think>` non-blank answer (see module doc)."""
    body = text.lstrip()
    if not body.startswith(THINK_OPEN):
        return False
    if body.count(THINK_OPEN) != 1 or body.count(THINK_CLOSE) != 1:
        return False
    think, _, answer = body[len(THINK_OPEN) :].partition(THINK_CLOSE)
    return bool(think.strip()) and bool(answer.strip())


def fast_format_ok(text: str) -> bool:
    """True iff `text` has no think content or stray think tags and a non-blank answer."""
    rest = _EMPTY_THINK.sub("", text)
    if THINK_OPEN in rest or THINK_CLOSE in rest:
        return False
    return bool(rest.strip())


def format_ok(text: str, mode: str) -> bool:
    """The format check of `mode` ("deep" or "fast") on one completion text."""
    return deep_format_ok(text) if mode == "deep" else fast_format_ok(text)


class FormatReward:
    """Format reward: 1.0 when the completion has the format of its `mode` column, else 0.0.

    `mode` is a list aligned with the completions ("deep" where absent). Never None.
    """

    def __init__(self) -> None:
        self.__name__ = "format"

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        texts = completion_texts(completions)
        modes = modes_column(columns, len(texts))
        return [1.0 if format_ok(t, m) else 0.0 for t, m in zip(texts, modes, strict=True)]


def _window_buckets(words: list[str], window: int) -> Iterator[np.ndarray]:
    """Start indices of the `window`-word windows of `words`, grouped by window hash,
    most populated group first.

    Words become integer ids and every window gets a polynomial hash (uint64 arithmetic wraps,
    which is the modulus) in `window` vector operations: O(n) work, done in numpy. One stable
    argsort then groups equal hashes.
    """
    n = len(words) - window + 1
    if window < 1 or n < 1:
        return
    vocab: dict[str, int] = {}
    ids = np.fromiter((vocab.setdefault(w, len(vocab) + 1) for w in words), dtype=np.uint64, count=len(words))
    hashes = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(window):
            hashes = hashes * _HASH_BASE + ids[j : j + n]
    order = np.argsort(hashes, kind="stable")
    sorted_hashes = hashes[order]
    lows = np.concatenate(([0], np.flatnonzero(sorted_hashes[1:] != sorted_hashes[:-1]) + 1))
    sizes = np.diff(np.concatenate((lows, [n])))
    for k in np.argsort(-sizes, kind="stable"):
        yield order[lows[k] : lows[k] + sizes[k]]


def max_window_count(text: str, window: int = 10) -> int:
    """The largest number of occurrences of any `window`-word window of `text` (0 if none).

    Hash collisions cannot inflate the answer: hash groups are re-counted exactly by their word
    tuples, largest first, until no remaining group can beat the best exact count.
    """
    words = text.split()
    best = 0
    for starts in _window_buckets(words, window):
        if len(starts) <= best:
            break
        exact: dict[tuple[str, ...], int] = defaultdict(int)
        for s in starts.tolist():
            exact[tuple(words[s : s + window])] += 1
        best = max(best, max(exact.values()))
    return best


def has_repetition(text: str, window: int = 10, threshold: int = 10) -> bool:
    """True iff some `window`-word window occurs at least `threshold` times in `text`.

    Same hashing as `max_window_count`, but stops at the first window confirmed (exactly, by its
    words) to reach `threshold`, so a megabyte of one repeated phrase costs one linear pass.
    """
    words = text.split()
    for starts in _window_buckets(words, window):
        if len(starts) < threshold:
            return False
        exact: dict[tuple[str, ...], int] = defaultdict(int)
        for s in starts.tolist():
            key = tuple(words[s : s + window])
            exact[key] += 1
            if exact[key] >= threshold:
                return True
    return False


class RepetitionPenalty:
    """Repetition penalty: `penalty` (-1.0) when some `window`-word window occurs >= `threshold`
    times in the completion (reasoning included), else 0.0. Applied always (see module doc).
    """

    def __init__(self, window: int = 10, threshold: int = 10, penalty: float = -1.0):
        if window < 1 or threshold < 2:
            raise ValueError("window must be >= 1 and threshold >= 2")
        self.window = int(window)
        self.threshold = int(threshold)
        self.penalty = float(penalty)
        self.__name__ = "repetition"

    def score_one(self, text: str) -> float:
        return self.penalty if has_repetition(text, self.window, self.threshold) else 0.0

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        return [self.score_one(t) for t in completion_texts(completions)]


format_reward = FormatReward()
repetition_penalty = RepetitionPenalty()
