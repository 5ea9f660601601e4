"""Print a policy's greedy held-out answers, to read what the accuracy numbers hide.

    python -m rl.show_answers --policy runs/demo/policy_grpo [--config configs/demo.yaml]
        [--qtypes colour_count,shape_count] [--n 8] [key=value ...]

The held-out rows come from the run config's data (overrides as in `rl.train`), filtered to
`--qtypes`; each is answered in both modes with the evaluation's own greedy requests and
scoring. One line per answer: mode, question type, question, reference, correct (1/0), text.

`--count-steps` adds, for the count-of-a-kind questions (Shapes' colour_count / size_count /
shape_count) answered in deep mode, how often the reasoning's filter step ("Of these, 2 are
large.") names the kind the question asks about, which kinds it names instead, how often the
answer repeats the step's count, and the accuracy when the kind is right: whether deep mode's
reasoning is causal for its answer, and where it goes wrong.

`--inventory` adds, for the perception questions an object inventory answers (exists, colour,
shape) in deep mode, how often the inventory the reasoning opens with implies the reference
answer (perception) and how often the final answer is the one the inventory implies (reading
it): whether a wrong answer comes from what the model saw or from what it did with it.

`--reading` adds the teacher-forced view of the same rows (`rl.reading`): fed the gold deep
completion, how often the policy predicts the next token of the inventory, of the lookup that
reads it and of the final answer; a low lookup or answer share with a high inventory share means
the language model cannot read a right inventory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rl.data.shapes_questions import COUNT_STEP, answer_from_inventory, asked_kind, inventory_objects

INVENTORY_QTYPES = ("exists", "colour", "shape")


def count_step_summary(answers: list[tuple[str, str, str, bool]]) -> dict[str, dict[str, Any]]:
    """Per qtype, from (qtype, question, deep completion text, correct) of count-of-a-kind
    questions ("How many red shapes are there?", "How many circles are there?"): shares of
    answers with a filter step, whose step names the asked kind, whose final answer equals the
    step's count, accuracy with the right kind named, and the kinds named (word -> count)."""
    out: dict[str, dict[str, Any]] = {}
    for qtype, question, text, correct in answers:
        asked = asked_kind(question)
        d = out.setdefault(qtype, {"n": 0, "step": 0, "right_kind": 0, "answer_is_step": 0,
                                   "right_kind_correct": 0, "named": {}})
        d["n"] += 1
        m = COUNT_STEP.search(text)
        if not m:
            continue
        d["step"] += 1
        d["named"][m.group(2)] = d["named"].get(m.group(2), 0) + 1
        d["answer_is_step"] += text.split("</think>")[-1].strip() == m.group(1)
        if m.group(2) == asked:
            d["right_kind"] += 1
            d["right_kind_correct"] += bool(correct)
    for d in out.values():
        named_right = d["right_kind"]
        d["right_kind_accuracy"] = d["right_kind_correct"] / named_right if named_right else None
        for k in ("step", "right_kind", "answer_is_step"):
            d[k] = d[k] / d["n"]
        del d["right_kind_correct"]
    return out


def inventory_summary(answers: list[tuple[str, str, str, str]]) -> dict[str, dict[str, Any]]:
    """Per qtype and over all (key "all"), from (qtype, question, deep completion text, reference)
    of exists / colour / shape questions: n, the share whose opening inventory implies an answer
    (`readable`) and, of those, the shares whose inventory implies the reference
    (`inventory_right`), whose final answer is the implied one (`follows`), and whose final
    answer is the implied one when the inventory is right (`follows_when_right`)."""
    counts: dict[str, dict[str, int]] = {}
    for qtype, question, text, reference in answers:
        reasoning, _, final = text.partition("</think>")
        implied = answer_from_inventory(question, inventory_objects(reasoning.replace("<think>", "")))
        for key in (qtype, "all"):
            d = counts.setdefault(key, {"n": 0, "readable": 0, "right": 0, "follows": 0, "follows_right": 0})
            d["n"] += 1
            if implied is None:
                continue
            follows = final.strip().lower() == implied
            d["readable"] += 1
            d["right"] += implied == reference
            d["follows"] += follows
            d["follows_right"] += follows and implied == reference
    out: dict[str, dict[str, Any]] = {}
    for key, d in counts.items():
        r = d["readable"]
        out[key] = {"n": d["n"], "readable": r / d["n"],
                    "inventory_right": d["right"] / r if r else None,
                    "follows": d["follows"] / r if r else None,
                    "follows_when_right": d["follows_right"] / d["right"] if d["right"] else None}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rl.show_answers", description=__doc__.splitlines()[0])
    p.add_argument("--policy", required=True, help="policy folder (Hugging Face format)")
    p.add_argument("--config", default="configs/demo.yaml", help="run config whose data and token caps to use")
    p.add_argument("--qtypes", default="", help="comma-separated question types (empty = every task)")
    p.add_argument("--n", type=int, default=8, help="how many held-out rows")
    p.add_argument("--count-steps", action="store_true",
                   help="summarise deep mode's filter step on count-of-a-kind questions (JSON, last line)")
    p.add_argument("--inventory", action="store_true",
                   help="summarise whether deep mode's exists/colour/shape answers follow its own inventory "
                        "(JSON, last line)")
    p.add_argument("--reading", action="store_true",
                   help="summarise teacher-forced next-token accuracy of the gold deep completion's inventory, "
                        "lookup and answer (JSON, last line)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = p.parse_args(argv)
    if not Path(args.policy).is_dir():
        p.error(f"--policy {args.policy}: no such folder (give a run's policy_warmup or policy_grpo)")

    from policies.hf_engine import HFEngine
    from policies.loading import PolicyConfig, load_policy
    from rl.config import load_train_config
    from rl.data.loader import load_data
    from rl.evaluate import eval_requests, is_correct

    cfg = load_train_config(args.config, args.overrides)
    heldout = load_data(cfg.data).eval
    wanted = {q for q in args.qtypes.split(",") if q}
    rows = [r for r in (heldout[i] for i in range(len(heldout)))
            if r["task"] != "description" and (not wanted or r.get("qtype") in wanted)][: args.n]
    model, processor, _ = load_policy(PolicyConfig(name_or_path=args.policy))
    engine = HFEngine(model.eval(), processor, dict(cfg.rollout.max_tokens))
    counted: list[tuple[str, str, str, bool]] = []
    looked_up: list[tuple[str, str, str, str]] = []
    for mode in ("deep", "fast"):
        for row, ro in zip(rows, engine.generate(eval_requests(rows, mode, cfg.eval.seed)), strict=True):
            text = ro.completions[0].text if ro.ok and ro.completions else ""
            question = row["prompt"][-1]["content"]
            if not isinstance(question, str):  # multimodal content: the last text part
                question = next((c.get("text", "") for c in reversed(question) if isinstance(c, dict)), "")
            correct = is_correct(row, text)
            print(f"{mode}\t{row.get('qtype') or row['task']}\t{question}\t{row['answer']}\t"
                  f"{int(correct)}\t{' '.join(text.split())}")
            if mode == "deep" and str(row.get("qtype", "")).endswith("_count"):
                counted.append((row["qtype"], question, text, correct))
            if mode == "deep" and row.get("qtype") in INVENTORY_QTYPES:
                looked_up.append((row["qtype"], question, text, str(row["answer"])))
    if args.count_steps:
        print(json.dumps(count_step_summary(counted), sort_keys=True))
    if args.inventory:
        print(json.dumps(inventory_summary(looked_up), sort_keys=True))
    if args.reading:
        from rl.reading import inventory_answers, reading_summary

        print(json.dumps({"answer_from_gold_inventory": inventory_answers(model, processor, rows)}, sort_keys=True))
        print(json.dumps(reading_summary(model, processor, rows), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
