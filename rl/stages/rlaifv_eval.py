"""RLAIF-V evaluation: CHAIR of greedy held-out descriptions with paired-bootstrap changes, the
held-out description set, and best-of-N self-reward reranking (the stage's measurements)."""

from __future__ import annotations

from typing import Any

from rl.data.rows import row_images, row_request, row_videos
from rollouts.types import SamplingSettings, ScoreRequest


def describe_chair(engine: Any, rows: list[dict[str, Any]], mode: str, seed: int) -> dict[str, Any]:
    """CHAIR of greedy descriptions of `rows`, with the per-response counts the intervals resample
    (`per_response`: hallucinated mentions, mentions, covered and ground-truth objects)."""
    from rewards.rlaifv.hallucination import chair_metrics, response_hallucination
    from rewards.verifiers import extract_answer

    greedy = SamplingSettings(temperature=0.0, seed=seed)
    outs = engine.generate([row_request(r, f"chair-{r['id']}", mode, 1, greedy) for r in rows])
    texts = [extract_answer(o.completions[0].text) if o.ok and o.completions else "" for o in outs]
    truths = [list(r["objects"]) for r in rows]
    per = [response_hallucination(t, gt) for t, gt in zip(texts, truths, strict=True)]
    return {**chair_metrics(texts, truths), "per_response": {
        "hallucinated": [len(p.hallucinated) for p in per], "mentioned": [len(p.mentioned) for p in per],
        "covered": [len(p.covered) for p in per], "gt": [p.n_gt for p in per]}}


def chair_change(before: dict[str, Any], after: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Paired-bootstrap 95% intervals (over the held-out descriptions) of the change in CHAIRi,
    CHAIRs (pooled ratios: after − before and after / before) and Cover (after − before) between
    two `_chair` results on the same rows."""
    from rl.stats import paired_bootstrap, paired_ratio_bootstrap

    b, a = before["per_response"], after["per_response"]
    chair_i = paired_ratio_bootstrap(b["hallucinated"], b["mentioned"], a["hallucinated"], a["mentioned"], seed=seed)
    flag = lambda xs: [1.0 if x else 0.0 for x in xs]  # noqa: E731
    chair_s = paired_ratio_bootstrap(flag(b["hallucinated"]), flag(b["mentioned"]), flag(a["hallucinated"]),
                                     flag(a["mentioned"]), seed=seed)
    keep = [i for i, g in enumerate(b["gt"]) if g]
    cover = paired_bootstrap([b["covered"][i] / b["gt"][i] for i in keep], [a["covered"][i] / a["gt"][i] for i in keep],
                             seed=seed)
    return {"chair_i": {k: v.to_dict() for k, v in chair_i.items()},
            "chair_s": {k: v.to_dict() for k, v in chair_s.items()}, "cover": cover.to_dict()}


def heldout_descriptions(eval_rows: Any, limit: int = 0) -> list[dict[str, Any]]:
    """Held-out description prompts: the split's description rows, plus (for rows that carry
    their ground-truth `objects`, as the Shapes split does) one "Describe the image." prompt for
    every other single-image held-out image, so CHAIR is measured on every held-out image."""
    from rl.data.shapes_questions import DESCRIBE_QUESTION

    rows = [r for r in eval_rows if r["task"] == "description"]
    described = {r["image_id"] for r in rows}
    if "objects" in eval_rows.column_names:
        for r in eval_rows:
            if r["image_id"] in described or len(r["images"]) != 1 or r.get("videos") or not r["objects"]:
                continue
            described.add(r["image_id"])
            rows.append({**r, "id": f"{r['image_id']}-describe", "question": DESCRIBE_QUESTION,
                         "prompt": [{"role": "user", "content": DESCRIBE_QUESTION}], "task": "description",
                         "qtype": "describe", "answer": "", "reasoning": ""})
    rows.sort(key=lambda r: str(r["image_id"]))
    return rows[:limit] if limit else rows


def _scored_logprobs(scorer: Any, requests: list[ScoreRequest | None]) -> tuple[list[list[float] | None], int]:
    """Log-probs of each request through `scorer` (one call; None passes through as None, an empty
    sequence as []); (log-probs or None per request, number of failed scores)."""
    todo = [r for r in requests if r is not None and r.target_start < len(r.token_ids)]
    results = iter(scorer.score(todo) if todo else [])
    out: list[list[float] | None] = []
    failed = 0
    for req in requests:
        if req is None:
            out.append(None)
            continue
        expected = len(req.token_ids) - req.target_start
        if expected == 0:
            out.append([])
            continue
        res = next(results, None)
        if res is None or res.error is not None or len(res.logprobs) != expected:
            out.append(None)
            failed += 1
        else:
            out.append([float(x) for x in res.logprobs])
    return out, failed


def best_of_n_eval(engine: Any, ref_scorer: Any, rows: list[dict[str, Any]], cfg: Any, seed: int) -> dict[str, Any]:
    """CHAIR of best-of-N self-reward vs a random sample, on held-out description `rows`.

    Samples `cfg.best_of_n_samples` candidates per row from `engine` (the current policy) at
    `cfg.temperature`, scores every candidate (prompt ‖ completion ids, EOS included) at
    temperature 1 under the policy (`engine.score`: the sampler's log-probs are tempered, so
    they are not reused) and under the reference (`ref_scorer`), keeps the candidate with the
    highest (β/T)Σ[log π_θ − log π_ref] (β = `cfg.dpo.beta`) and measures CHAIR on its answer.
    The baseline is candidate 0 of the same rows. Rows whose rollout failed are skipped
    (`failed_rollouts`); a candidate that could not be scored ranks last (`score_errors`).
    """
    from rewards.rlaifv.best_of_n import choose_best
    from rewards.rlaifv.hallucination import chair_metrics
    from rewards.verifiers import extract_answer

    n = cfg.best_of_n_samples
    sampling = SamplingSettings(temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=seed)
    reqs = [row_request(r, f"bon-{r['id']}", cfg.mode, n, sampling) for r in rows]
    outs = engine.generate(reqs)
    kept: list[tuple[dict[str, Any], Any]] = []
    for row, ro in zip(rows, outs, strict=True):
        if ro.ok and ro.completions:
            kept.append((row, ro))
    score_reqs: list[ScoreRequest | None] = []
    for row, ro in kept:
        prompt = list(ro.prompt_ids)
        for k, comp in enumerate(ro.completions):
            score_reqs.append(
                ScoreRequest(prompt + list(comp.completion_ids), row_images(row), len(prompt), 1.0, f"bon-{row['id']}-{k}",
                             row_videos(row))
                if prompt else None
            )
    policy_lps, policy_failed = _scored_logprobs(engine, score_reqs)
    ref_lps, ref_failed = _scored_logprobs(ref_scorer, score_reqs)
    candidates, pol_rows, ref_rows, pos = [], [], [], 0
    for _, ro in kept:
        m = len(ro.completions)
        candidates.append([c.text for c in ro.completions])
        pol_rows.append(policy_lps[pos : pos + m])
        ref_rows.append(ref_lps[pos : pos + m])
        pos += m
    choices = choose_best(candidates, pol_rows, ref_rows, cfg.dpo.beta)
    truths = [list(row["objects"]) for row, _ in kept]
    best = chair_metrics([extract_answer(c.text) for c in choices], truths)
    first = chair_metrics([extract_answer(texts[0]) for texts in candidates], truths)
    unscored = sum(req is None for req in score_reqs)
    return {
        "n": n, "chair_i": best["chair_i"], "chair_s": best["chair_s"], "cover": best["cover"],
        "random_sample": {"chair_i": first["chair_i"], "chair_s": first["chair_s"], "cover": first["cover"]},
        "prompts": len(kept), "failed_rollouts": len(rows) - len(kept),
        "score_errors": policy_failed + ref_failed + unscored,
        "reranked": sum(c.index != 0 for c in choices),  # prompts where the pick is not candidate 0
    }  # fmt: skip
