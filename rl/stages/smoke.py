"""Smoke stage: load the policy with transformers and evaluate it on held-out data in both modes.

The smallest end-to-end run: model + data + chat template with the thinking switch + greedy
generation + rule verifiers + report. It needs no Ray and no vLLM.
"""

from __future__ import annotations

from typing import Any

from policies.hf_engine import HFEngine
from policies.loading import PolicyConfig, load_model, load_processor
from rl.context import RunContext
from rl.evaluate import evaluate


def run(ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.cfg
    pcfg = PolicyConfig(**{**vars(cfg.policy), "name_or_path": ctx.model_path})
    model = load_model(ctx.model_path, pcfg).eval()
    processor = load_processor(ctx.model_path, cfg.policy.trust_remote_code)
    engine = HFEngine(model, processor, dict(cfg.rollout.max_tokens))
    result = evaluate(engine, ctx.data.eval, cfg.eval)
    result["num_params"] = sum(p.numel() for p in model.parameters())
    return result
