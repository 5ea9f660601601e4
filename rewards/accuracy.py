"""Accuracy reward routed per task type and thinking mode: rule verifier, RLPR, or RLPR without debias.

MiniCPM-V 4.5 (arXiv 2509.18154) scores short answers with rule verifiers and free-form answers
with RLPR's probability reward. RLPR (arXiv 2506.18254) debiases with r' = the reference's score
right after the prompt; in fast mode there is no reasoning, so o' *is* that debias sequence,
r ≈ r' and the debiased reward ≈ 0 (exactly 0 with debias "current"). Hence the defaults:

    task         deep            fast
    short        rule            rule
    freeform     rlpr            rlpr_nodebias
    description  rlpr            rlpr_nodebias   (the reference is a description)

Overrides map "task.mode" (or "task" for both modes) to a route; "task.mode" wins over "task".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rewards.common import MODES, column, completion_texts, media_column, modes_column
from rewards.rlpr import RLPRReward, RLPRScore
from rewards.verifiers import RuleAccuracy

TASKS = ("short", "freeform", "description")
ROUTES = ("rule", "rlpr", "rlpr_nodebias")
DEFAULT_ROUTING: dict[str, str] = {
    "short.deep": "rule", "short.fast": "rule",
    "freeform.deep": "rlpr", "freeform.fast": "rule",
    "description.deep": "rlpr", "description.fast": "rlpr_nodebias",
}  # fmt: skip


def routing_errors(overrides: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, message) for each bad override key or value; empty when all are valid."""
    errors = []
    for key, value in overrides.items():
        task, _, mode = str(key).partition(".")
        if task not in TASKS:
            errors.append(
                (key, f"unknown task {task!r}; tasks are {list(TASKS)} (keys look like 'freeform.fast')")
            )
        elif mode and mode not in MODES:
            errors.append((key, f"unknown mode {mode!r}; modes are {list(MODES)}"))
        elif value not in ROUTES:
            errors.append((key, f"unknown route {value!r}; routes are {list(ROUTES)}"))
    return errors


def resolve_routing(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The full "task.mode" → route table: defaults, then "task" overrides, then "task.mode" ones."""
    overrides = dict(overrides or {})
    errors = routing_errors(overrides)
    if errors:
        key, message = errors[0]
        raise ValueError(f"accuracy routing key {key!r}: {message}")
    table = dict(DEFAULT_ROUTING)
    for key, route in overrides.items():
        if "." not in key:
            for mode in MODES:
                table[f"{key}.{mode}"] = route
    for key, route in overrides.items():
        if "." in key:
            table[key] = route
    return table


@dataclass
class AccuracyScore:
    """The accuracy of one completion and how it was obtained, for logging."""

    value: float | None  # None when the row has no reference answer
    route: str  # "rule" | "rlpr" | "rlpr_nodebias"
    task: str
    mode: str
    rlpr: RLPRScore | None = None  # set on RLPR routes


class AccuracyReward:
    """Accuracy reward (TRL signature) that routes each completion by (`task`, `mode`).

    Args:
        routing: overrides of `DEFAULT_ROUTING` ({"freeform.fast": "rlpr"}, {"short": "rlpr"}).
        rlpr: an `RLPRReward`, or a dict of its constructor params (debias, temperature). The
            "rlpr" route uses its debias setting; "rlpr_nodebias" uses debias "none".
        rule: a `RuleAccuracy`, or a dict of its params.
        default_task: the task of rows whose `task` column is absent or None.
        tokenizer, scorer: passed on to the RLPR reward (or attach later with the setters).

    Columns: `answer`, `task`, `mode`, and for RLPR rows `prompt_ids` and `images`; `qtype` for
    rule rows. All RLPR rows of a call go to the scorer in one request. A `task` value outside
    `TASKS` raises (a data bug should stop the run, not silently pick a reward).
    """

    def __init__(
        self,
        routing: Mapping[str, str] | None = None,
        rlpr: RLPRReward | Mapping[str, Any] | None = None,
        rule: RuleAccuracy | Mapping[str, Any] | None = None,
        default_task: str = "short",
        tokenizer: Any = None,
        scorer: Any = None,
    ):
        if default_task not in TASKS:
            raise ValueError(f"default_task must be one of {list(TASKS)}, got {default_task!r}")
        self.routing = resolve_routing(routing)
        self.rlpr = rlpr if isinstance(rlpr, RLPRReward) else RLPRReward(**dict(rlpr or {}))
        self.rule = rule if isinstance(rule, RuleAccuracy) else RuleAccuracy(**dict(rule or {}))
        self.default_task = default_task
        if tokenizer is not None:
            self.rlpr.set_tokenizer(tokenizer)
        if scorer is not None:
            self.rlpr.set_scorer(scorer)
        self.last_breakdown: list[AccuracyScore] = []
        self.__name__ = "accuracy"

    def set_scorer(self, scorer: Any) -> None:
        self.rlpr.set_scorer(scorer)

    def set_tokenizer(self, tokenizer: Any) -> None:
        self.rlpr.set_tokenizer(tokenizer)

    def state_dict(self) -> dict[str, Any]:
        return {"rlpr": self.rlpr.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rlpr.load_state_dict(state["rlpr"])

    def route(self, task: str | None, mode: str) -> str:
        """The route of one row."""
        task = self.default_task if task is None else task
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r} in the `task` column; tasks are {list(TASKS)}")
        return self.routing[f"{task}.{mode}"]

    def score_batch(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[AccuracyScore]:
        """Per-completion accuracy with its route and (on RLPR routes) the RLPR breakdown."""
        texts = completion_texts(completions)
        n = len(texts)
        answers = column(columns, "answer", n)
        qtypes = column(columns, "qtype", n)
        modes = modes_column(columns, n)
        tasks = [self.default_task if t is None else t for t in column(columns, "task", n)]
        routes = [self.route(t, m) for t, m in zip(tasks, modes, strict=True)]
        rlpr_rows = {i for i, r in enumerate(routes) if r != "rule" and answers[i] is not None}
        rlpr_scores: list[RLPRScore | None] = [None] * n
        if rlpr_rows:
            references = [answers[i] if i in rlpr_rows else None for i in range(n)]
            debias = [self.rlpr.debias if r == "rlpr" else "none" for r in routes]
            rlpr_scores = self.rlpr.score_batch(
                texts, references, column(columns, "prompt_ids", n), media_column(columns, n), modes, debias
            )
        out = []
        for i in range(n):
            if routes[i] == "rule":
                value = self.rule.score_one(texts[i], answers[i], qtypes[i])
            else:
                value = None if rlpr_scores[i] is None else rlpr_scores[i].reward
            out.append(
                AccuracyScore(value=value, route=routes[i], task=tasks[i], mode=modes[i], rlpr=rlpr_scores[i])
            )
        return out

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        self.last_breakdown = self.score_batch(prompts, completions, **columns)
        return [s.value for s in self.last_breakdown]
