"""Rollout benchmark: the vLLM rollout pool vs transformers `generate`, plus a weight sync.

    python -m rollouts.bench --json runs/bench/rollouts_tiny.json [--size tiny|small] [--policy DIR]

In one process on this machine: builds the tiny or small model (random weights) or loads a trained
policy folder (`--policy`, e.g. a run's `policy_warmup`), samples the same prompts (with
images, n=8, fixed max tokens) through (a) a one-actor rollout pool and (b) transformers
`generate` on the same weights, then perturbs the trainable weights, syncs them to the actor,
times it against a plain tensor copy of the same bytes, and checks trainer-vs-actor log-prob
parity on the synced weights. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def _requests(rows: list[dict[str, Any]], n: int, max_tokens: int):
    from rl.data.rows import row_request
    from rollouts.types import SamplingSettings

    sp = SamplingSettings(temperature=1.0, max_tokens=max_tokens)
    return [row_request(r, f"b{i}", "deep" if i % 2 else "fast", n, sp) for i, r in enumerate(rows)]


def _tokens(rollouts) -> int:
    return sum(len(c.completion_ids) for ro in rollouts for c in ro.completions)


def _timed_generate(engine: Any, reqs: list, repeats: int) -> tuple[float, int]:
    engine.generate(reqs[:2])  # warm-up
    t0, tokens = time.perf_counter(), 0
    for _ in range(repeats):
        tokens += _tokens(engine.generate(reqs))
    return time.perf_counter() - t0, tokens


def _mean_tokens(tokens: int, reqs: list, repeats: int) -> float:
    return tokens / max(1, repeats * sum(r.n for r in reqs))


def _memcpy_gb_per_s(payload) -> float:
    import torch

    dst = [torch.empty_like(t) for t in payload.tensors]
    best = float("inf")
    for _ in range(3):  # warm destination pages: time the copy itself, best of 3
        t0 = time.perf_counter()
        for d, s in zip(dst, payload.tensors, strict=False):
            d.copy_(s)
        best = min(best, time.perf_counter() - t0)
    return payload.num_bytes / 1e9 / max(best, 1e-9)


def _parity(pool: Any, model: Any, processor: Any, rows: list[dict[str, Any]]) -> float:
    from policies.chat import encode_prompt
    from policies.scoring import HFScorer
    from rl.data.rows import row_images, row_videos
    from rollouts.types import ScoreRequest

    reqs = []
    for r in rows[:4]:
        images, videos = row_images(r), row_videos(r)
        prompt = encode_prompt(processor, list(r["prompt"]), images, "deep", videos)
        tail = processor.tokenizer("<think>" + r["reasoning"] + "</think>\n\n" + r["answer"], add_special_tokens=False)["input_ids"]
        reqs.append(ScoreRequest(prompt + tail, images, len(prompt), videos=videos))
    actor, trainer = pool.score(reqs), HFScorer(model, processor).score(reqs)
    return max(abs(a - b) for x, y in zip(actor, trainer, strict=False) for a, b in zip(x.logprobs, y.logprobs, strict=True))


def run(size: str, num_prompts: int, n: int, max_tokens: int, repeats: int, enforce_eager: bool = True,
        policy: str | None = None) -> dict[str, Any]:
    """A random-weight model samples every completion to `max_tokens`; a trained policy (`policy`)
    stops fast-mode answers after a few tokens and deep ones after its reasoning, the mix of
    lengths a hybrid rollout batch really has."""
    if policy and not (Path(policy) / "config.json").is_file():  # before the heavy imports
        raise SystemExit(f"--policy {policy}: not a model folder (no config.json); pass e.g. runs/demo/policy_warmup")
    import torch

    from policies.hf_engine import HFEngine
    from policies.loading import PolicyConfig, load_policy
    from policies.tiny import build_tiny_model
    from rl.data.shapes import make_shapes
    from rollouts.config import RolloutConfig
    from rollouts.pool import RolloutPool
    from rollouts.ray_utils import init_ray
    from rollouts.weight_sync import collect_trainable

    if policy:
        folder = Path(policy)
    else:
        folder = Path(tempfile.mkdtemp(prefix=f"bench_{size}_")) / "model"
        build_tiny_model(folder, seed=0, size=size)
    rows = list(make_shapes(num_train_images=num_prompts, num_heldout_images=1, seed=11)["train"])[:num_prompts]
    model, processor, _ = load_policy(PolicyConfig(name_or_path=str(folder)))
    model.eval()
    reqs = _requests(rows, n, max_tokens)
    init_ray(num_cpus=os.cpu_count())
    # Same thread count as transformers in this process: all cores (the pipeline keeps 1, see config).
    cfg = RolloutConfig(num_actors=1, num_cpus_per_actor=1, threads_per_actor=os.cpu_count() or 1,
                        max_tokens={"deep": max_tokens, "fast": max_tokens}, enforce_eager=enforce_eager)
    t0 = time.perf_counter()
    pool = RolloutPool(str(folder), cfg)
    start_s = time.perf_counter() - t0
    pool_s, pool_tokens = _timed_generate(pool, reqs, repeats)
    hf_s, hf_tokens = _timed_generate(HFEngine(model, processor, {"deep": max_tokens, "fast": max_tokens}), reqs, 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.01)
    payload = collect_trainable(model, pool.version + 1)
    stats = pool.sync(payload)
    apply_s = max(h.get("last_apply_s", 0.0) for h in pool.health())
    result = {
        "size": size, "policy": str(folder) if policy else "random init", "num_params": sum(p.numel() for p in model.parameters()),
        "num_prompts": num_prompts, "n": n, "max_tokens": max_tokens, "enforce_eager": enforce_eager,
        "pool_start_seconds": start_s,
        "pool_tokens_per_s": pool_tokens / pool_s, "hf_generate_tokens_per_s": hf_tokens / hf_s,
        "pool_mean_completion_tokens": _mean_tokens(pool_tokens, reqs, repeats),
        "hf_mean_completion_tokens": _mean_tokens(hf_tokens, reqs, 1),
        "sync_seconds": stats.seconds, "sync_bytes": stats.num_bytes, "sync_gb_per_s": stats.gb_per_s,
        "sync_apply_seconds": apply_s, "sync_transfer_seconds": stats.seconds - apply_s,
        "sync_tensors": stats.num_tensors, "sync_skipped_frozen": stats.skipped_frozen,
        "memcpy_gb_per_s": _memcpy_gb_per_s(payload),
        "parity_max_abs_logprob_diff": _parity(pool, model, processor, rows),
    }  # fmt: skip
    result["speedup_vs_hf_generate"] = result["pool_tokens_per_s"] / result["hf_generate_tokens_per_s"]
    result["sync_vs_memcpy"] = result["sync_gb_per_s"] / result["memcpy_gb_per_s"]
    pool.shutdown()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--size", choices=["tiny", "small"], default="tiny")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compile", action="store_true",
                        help="let vLLM compile the model (enforce_eager=false): slower start, faster decoding")
    parser.add_argument("--policy", default=None,
                        help="a trained policy folder instead of a random-weight model (--size then only labels it)")
    args = parser.parse_args(argv)
    res = run(args.size, args.prompts, args.n, args.max_tokens, args.repeats, enforce_eager=not args.compile,
              policy=args.policy)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    width = max(len(k) for k in res)
    for key, value in res.items():
        print(f"{key:<{width}}  {value:.4g}" if isinstance(value, float) else f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
