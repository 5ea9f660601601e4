"""Held-out evaluation: accuracy per task type, qtype and mode, completion length per mode, CHAIR.

Every held-out example is answered in both modes with greedy decoding through any `Engine`
(the vLLM rollout pool in a run, transformers `generate` in the smoke stage), so deep and fast
accuracy are measured on the same prompts. Short answers are checked by the rule verifiers;
free-form answers by normalised exact match against the reference (a phrase-inside match would
accept "above and to the left of X" for "to the left of X"), with word-overlap F1 beside it as
partial credit (`freeform_f1`); descriptions by CHAIR metrics
against the scene's object list when the RLAIF-V metrics are available. Per-question scores
(`scores[mode][id]`) are kept so the report can pair two stages question by question.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from rewards.verifiers import exact_match, extract_answer, token_f1, verify
from rl.data.rows import row_request
from rollouts.types import MODES, RolloutRequest, SamplingSettings


@dataclass
class EvalConfig:
    max_examples: int = 64  # held-out examples evaluated after each stage (0 = all)
    batch_size: int = 64
    seed: int = 0
    modes: list[str] | None = None  # default: both


def is_correct(row: dict[str, Any], completion: str) -> bool:
    answer = extract_answer(completion)
    if row["task"] == "freeform":
        return exact_match(answer, row["answer"])
    return verify(answer, row["answer"], row.get("qtype"))


def eval_requests(rows: list[dict[str, Any]], mode: str, seed: int) -> list[RolloutRequest]:
    greedy = SamplingSettings(temperature=0.0, seed=seed)
    return [row_request(r, f"eval-{mode}-{r['id']}", mode, 1, greedy) for r in rows]


def _chair(rows: list[dict[str, Any]], texts: list[str]) -> dict[str, float]:
    from rewards.rlaifv.hallucination import chair_metrics

    return chair_metrics([extract_answer(t) for t in texts], [list(r["objects"]) for r in rows])


def majority_baseline(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per qtype (task for rows without one) of the rule-scored rows: the most common gold answer,
    its share and the count. The share is the accuracy of a policy that gives that one answer to
    every question of the type without looking at the image: a prior, which a per-qtype gain must
    beat to be about the image or the reasoning."""
    golds: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if r["task"] != "description":
            golds[r.get("qtype") or r["task"]].append(str(r["answer"]).strip().lower())
    out = {}
    for qtype, answers in sorted(golds.items()):
        top = max(sorted(set(answers)), key=answers.count)
        out[qtype] = {"answer": top, "share": answers.count(top) / len(answers), "n": len(answers)}
    return out


def evaluate(engine: Any, dataset: Any, cfg: EvalConfig) -> dict[str, Any]:
    """Greedy answers for held-out rows in each mode; returns nested metrics."""
    n = len(dataset) if cfg.max_examples <= 0 else min(cfg.max_examples, len(dataset))
    rows = [dataset[i] for i in range(n)]
    modes = cfg.modes or list(MODES)
    out: dict[str, Any] = {"n": n, "accuracy": {}, "accuracy_by_task": {}, "accuracy_by_qtype": {}, "freeform_f1": {},
                           "mean_completion_tokens": {}, "scores": {},
                           # question id -> [task, qtype] of every scored row: the pairing key of
                           # the report's bootstrap intervals (rl.stats)
                           "questions": {str(r["id"]): [r["task"], r.get("qtype") or ""] for r in rows
                                         if r["task"] != "description"},
                           "majority_by_qtype": majority_baseline(rows)}
    for mode in modes:
        rollouts = []
        for start in range(0, n, cfg.batch_size):
            rollouts += engine.generate(eval_requests(rows[start : start + cfg.batch_size], mode, cfg.seed))
        by_task: dict[str, list[float]] = defaultdict(list)
        by_qtype: dict[str, list[float]] = defaultdict(list)
        scores: dict[str, float] = {}
        lengths, desc_rows, desc_texts, f1s = [], [], [], []
        for row, ro in zip(rows, rollouts, strict=False):
            text = ro.completions[0].text if ro.ok and ro.completions else ""
            lengths.append(len(ro.completions[0].completion_ids) if ro.ok and ro.completions else 0)
            if row["task"] == "description":
                desc_rows.append(row)
                desc_texts.append(text)
            else:
                score = float(is_correct(row, text))
                by_task[row["task"]].append(score)
                by_qtype[row.get("qtype") or row["task"]].append(score)
                scores[str(row["id"])] = score
                if row["task"] == "freeform":
                    f1s.append(token_f1(extract_answer(text), row["answer"]))
        scored = [v for vals in by_task.values() for v in vals]
        out["accuracy"][mode] = sum(scored) / len(scored) if scored else 0.0
        out["accuracy_by_task"][mode] = {t: sum(v) / len(v) for t, v in by_task.items()}
        out["accuracy_by_qtype"][mode] = {q: sum(v) / len(v) for q, v in sorted(by_qtype.items())}
        out["scores"][mode] = scores
        out["mean_completion_tokens"][mode] = sum(lengths) / max(len(lengths), 1)
        if f1s:  # partial credit next to exact match: the tiny policy rarely gets a phrase exactly
            out["freeform_f1"][mode] = sum(f1s) / len(f1s)
        if desc_rows:
            out.setdefault("chair", {})[mode] = _chair(desc_rows, desc_texts)
    out["accuracy"]["mean"] = sum(out["accuracy"][m] for m in modes) / len(modes)
    return out
