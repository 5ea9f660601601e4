"""The model-based claim splitter of RLAIF-V: an instruction model lists claims and questions.

RLAIF-V (arXiv 2405.17220, §3.2) splits each response into atomic, self-contained factual
claims with a fine-tuned Llama-3-8B at temperature 0.2 (opinions excluded), then rewrites each
claim as a yes/no question without changing its content or negation. `ModelClaimSplitter` does
both with any generation engine and our own prompt templates (`templates/split_claims.txt`,
`templates/to_question.txt`), and parses the model's numbered/bulleted lists and questions
robustly: what does not parse is dropped and counted in `SplitStats`, never raised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any

from rewards.rlaifv.claims import Claim
from rewards.rlaifv.text import strip_think, words
from rollouts.types import RolloutRequest, SamplingSettings

_BULLET_RE = re.compile(
    r"^\s*(?:\(?\d{1,3}\s*[.):]|[-*\u2022\u00b7]|claim\s*\d*\s*[:.)-])\s*(.*)$", re.IGNORECASE
)
_QUESTION_PREFIX_RE = re.compile(r"^\s*(?:question|q)\s*\d*\s*[:.)-]\s*", re.IGNORECASE)
_NEGATION_RE = re.compile(r"\b(?:not|no|never|none|nothing|neither|nor|without)\b|n't\b", re.IGNORECASE)
_NONE_ANSWERS = ("none", "none.", "no claims", "no claims.", "n/a")
YES_NO_STARTS: tuple[str, ...] = (
    "is", "are", "was", "were", "am", "do", "does", "did", "can", "could", "has", "have", "had",
    "will", "would", "should", "shall", "may", "might", "must",
)  # fmt: skip


def load_template(name: str) -> str:
    """The text of a prompt template shipped in `rewards/rlaifv/templates/`."""
    return resources.files("rewards.rlaifv.templates").joinpath(name).read_text(encoding="utf-8")


def fill(template: str, **values: str) -> str:
    """Replace `{key}` placeholders literally (a response may itself contain braces)."""
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


def _clean(line: str) -> str:
    line = line.strip().strip("*_`").strip()
    if len(line) >= 2 and line[0] in "\"'" and line[-1] == line[0]:
        line = line[1:-1].strip()
    return line


def parse_claim_lines(output: str) -> tuple[list[str], int]:
    """(claims, number of dropped lines) from the splitter model's list.

    Numbered ("1.", "2)", "(3)") and bulleted ("-", "*", "•") lines are claims; when the model
    used no markers at all, every line is. Dropped and counted: unmarked lines beside a marked
    list, lines ending in ":" (preambles), and lines with fewer than two words. "None" (or an
    empty output) means no claims, which is not a failure. Repeats are kept once.
    """
    lines = [ln for ln in strip_think(output).splitlines() if ln.strip()]
    if not lines or _clean(lines[0]).lower() in _NONE_ANSWERS:
        return [], 0
    matches = [_BULLET_RE.match(ln) for ln in lines]
    marked = any(m is not None for m in matches)
    claims: list[str] = []
    dropped = 0
    for ln, m in zip(lines, matches, strict=True):
        if marked and m is None:
            dropped += 1
            continue
        text = _clean(m.group(1) if m is not None else ln)
        if text.endswith(":") or len(text.split()) < 2 or not any(ch.isalpha() for ch in text):
            dropped += 1
            continue
        if text.lower() not in {c.lower() for c in claims}:
            claims.append(text)
    return claims, dropped


def negation_count(text: str) -> int:
    """How many negation words ("no", "not", "n't", …) `text` holds."""
    return len(_NEGATION_RE.findall(text))


def parse_question(output: str, claim: str) -> str | None:
    """The yes/no question in the rewriting model's output, or None when it is not one.

    Takes the first non-empty line, drops a "Question:" prefix, quotes and anything after the
    first "?". It must start with an auxiliary verb ("Is", "Are", "Does", …), end with "?", and
    keep the claim's negation (both negated or both not) — the paper's "without changing its
    content or negation", checked as far as a parser can.
    """
    lines = [ln for ln in strip_think(output).splitlines() if ln.strip()]
    if not lines:
        return None
    m = _BULLET_RE.match(lines[0])
    text = _clean(_QUESTION_PREFIX_RE.sub("", m.group(1) if m else lines[0]))
    if "?" not in text:
        return None
    text = _clean(text[: text.index("?") + 1])
    first = words(text)[:1]
    if not first or first[0] not in YES_NO_STARTS:
        return None
    if (negation_count(text) > 0) != (negation_count(claim) > 0):
        return None
    return text[0].upper() + text[1:]


@dataclass
class SplitStats:
    """Counters of a `ModelClaimSplitter` (cumulative; `reset()` to start over)."""

    responses: int = 0  # responses sent to the splitter model
    claims: int = 0  # claims kept (with a parsed question)
    dropped_lines: int = 0  # list lines that were not a claim
    dropped_questions: int = 0  # claims whose question could not be parsed (dropped)
    errors: int = 0  # generation requests that came back with an error or no text
    truncated: int = 0  # claims beyond `max_claims` of one response (dropped)

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0)


class ModelClaimSplitter:
    """Claim splitter that prompts an instruction model (RLAIF-V's "divide" with a model).

    Two batched `generator.generate` calls per `split_many`: one listing the claims of each
    response (`templates/split_claims.txt`), one rewriting each claim as a yes/no question
    (`templates/to_question.txt`), both in fast mode at `temperature` (paper: 0.2). Any object
    with `generate(list[RolloutRequest]) -> list[Rollout]` works (a rollout actor, `HFEngine`).

    A request that comes back with an error counts in `stats.errors` and gives no claims; a
    claim line or question that does not parse is dropped and counted. An exception raised by
    `generate` itself (a dead engine) propagates: the round cannot go on without its splitter.
    """

    name = "model"

    def __init__(
        self,
        generator: Any,
        temperature: float = 0.2,
        max_tokens: int = 256,
        question_max_tokens: int = 64,
        seed: int = 0,
        max_claims: int = 32,
        split_template: str | None = None,
        question_template: str | None = None,
    ):
        self.generator = generator
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.question_max_tokens = int(question_max_tokens)
        self.seed = int(seed)
        self.max_claims = int(max_claims)
        self.split_template = split_template or load_template("split_claims.txt")
        self.question_template = question_template or load_template("to_question.txt")
        self.stats = SplitStats()

    def _request(self, request_id: str, text: str, max_tokens: int, k: int) -> RolloutRequest:
        sampling = SamplingSettings(
            temperature=self.temperature, max_tokens=max_tokens, seed=self.seed + k, logprobs=False
        )
        return RolloutRequest(
            request_id=request_id, messages=[{"role": "user", "content": text}], images=[], mode="fast",
            sampling=sampling,
        )  # fmt: skip

    def _generate(self, requests: list[RolloutRequest]) -> dict[str, str | None]:
        """request_id → completion text (None on an error); one `generate` call."""
        if not requests:
            return {}
        out: dict[str, str | None] = {r.request_id: None for r in requests}
        for rollout in self.generator.generate(requests):
            good = rollout.error is None and rollout.completions
            if good and rollout.completions[0].finish_reason != "error":
                out[rollout.request_id] = rollout.completions[0].text
        self.stats.errors += sum(v is None for v in out.values())
        return out

    def split(self, response: str, prompt_id: str, response_index: int) -> list[Claim]:
        return self.split_many([(response, prompt_id, response_index)])[0]

    def split_many(self, items: list[tuple[str, str, int]]) -> list[list[Claim]]:
        """Claims of each (response, prompt_id, response_index), in the same order."""
        answers = [strip_think(response or "").strip() for response, _, _ in items]
        split_reqs = [
            self._request(f"split-{i}", fill(self.split_template, response=a), self.max_tokens, i)
            for i, a in enumerate(answers)
            if a
        ]
        self.stats.responses += len(split_reqs)
        listed = self._generate(split_reqs)
        claim_texts: list[list[str]] = []
        for i in range(len(items)):
            lines, dropped = parse_claim_lines(listed.get(f"split-{i}") or "")
            self.stats.dropped_lines += dropped
            self.stats.truncated += max(0, len(lines) - self.max_claims)
            claim_texts.append(lines[: self.max_claims])
        q_reqs = [
            self._request(f"q-{i}-{j}", fill(self.question_template, claim=c), self.question_max_tokens, j)
            for i, cs in enumerate(claim_texts)
            for j, c in enumerate(cs)
        ]
        rewritten = self._generate(q_reqs)
        out: list[list[Claim]] = []
        for i, ((_, prompt_id, index), cs) in enumerate(zip(items, claim_texts, strict=True)):
            claims = []
            for j, text in enumerate(cs):
                question = parse_question(rewritten.get(f"q-{i}-{j}") or "", text)
                if question is None:
                    self.stats.dropped_questions += 1
                    continue
                claims.append(Claim(text, question, index, prompt_id, kind="other"))
            self.stats.claims += len(claims)
            out.append(claims)
        return out
