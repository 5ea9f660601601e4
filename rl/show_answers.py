"""Print a policy's greedy held-out answers, to read what the accuracy numbers hide.

    python -m rl.show_answers --policy runs/demo/policy_grpo [--config configs/demo.yaml]
        [--qtypes colour_count,shape_count] [--n 8] [key=value ...]

The held-out rows come from the run config's data (overrides as in `rl.train`), filtered to
`--qtypes`; each is answered in both modes with the evaluation's own greedy requests and
scoring. One line per answer: mode, question type, question, reference, correct (1/0), text.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rl.show_answers", description=__doc__.splitlines()[0])
    p.add_argument("--policy", required=True, help="policy folder (Hugging Face format)")
    p.add_argument("--config", default="configs/demo.yaml", help="run config whose data and token caps to use")
    p.add_argument("--qtypes", default="", help="comma-separated question types (empty = every task)")
    p.add_argument("--n", type=int, default=8, help="how many held-out rows")
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
    for mode in ("deep", "fast"):
        for row, ro in zip(rows, engine.generate(eval_requests(rows, mode, cfg.eval.seed)), strict=True):
            text = ro.completions[0].text if ro.ok and ro.completions else ""
            question = row["prompt"][-1]["content"]
            if not isinstance(question, str):  # multimodal content: the last text part
                question = next((c.get("text", "") for c in reversed(question) if isinstance(c, dict)), "")
            print(f"{mode}\t{row.get('qtype') or row['task']}\t{question}\t{row['answer']}\t"
                  f"{int(is_correct(row, text))}\t{' '.join(text.split())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
