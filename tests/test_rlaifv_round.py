"""One RLAIF-V round end to end on the tiny model: sample → claims → labels → pairs → DPO → sync."""

from __future__ import annotations

from pathlib import Path

import datasets
import torch

from policies.hf_engine import HFEngine
from policies.loading import PolicyConfig, load_model, load_processor
from rl.config import TrainConfig
from rl.context import RunContext
from rl.data.loader import LoadedData
from rl.stages import rlaifv


def test_one_round_writes_pairs_and_changes_the_policy(tmp_path, tiny_model_dir, shapes_small):
    cfg = TrainConfig(output_dir=str(tmp_path), stages=["rlaifv"])
    cfg.rlaifv.rounds, cfg.rlaifv.prompts_per_round, cfg.rlaifv.n_samples = 1, 4, 4
    cfg.rlaifv.max_tokens, cfg.rlaifv.labeler = 24, "oracle"  # ground truth: rejections guaranteed
    cfg.rlaifv.dpo.max_steps, cfg.rlaifv.dpo.learning_rate = 1, 1e-2
    cfg.eval.max_examples = 4
    cfg.rlaifv.best_of_n, cfg.rlaifv.best_of_n_samples = True, 2  # reference: the tiny model on disk
    engine_model = load_model(tiny_model_dir, PolicyConfig()).eval()
    engine = HFEngine(engine_model, load_processor(tiny_model_dir), {"deep": 24, "fast": 24})
    before = {n: p.detach().clone() for n, p in engine_model.named_parameters()}
    data = LoadedData(shapes_small["train"], shapes_small["heldout"], {})
    ctx = RunContext(cfg=cfg, out=Path(tmp_path), data=data, model_path=tiny_model_dir, engine=engine)
    metrics = rlaifv.run(ctx)
    pairs = datasets.Dataset.from_parquet(str(tmp_path / "rlaifv" / "round_0" / "pairs.parquet"))
    rnd = metrics["rounds"][0]
    assert rnd["claims"] > 0 and rnd["rejected"] > 0 and len(pairs) == rnd["pairs"] > 0
    assert set(pairs.column_names) >= {"prompt", "chosen", "rejected", "images", "chosen_score", "chosen_claims"}
    assert all(c > r for c, r in zip(pairs["chosen_score"], pairs["rejected_score"], strict=False))
    assert metrics["steps"] == 1 and rnd["synced_version"] == engine.version == 1
    changed = [n for n, p in engine_model.named_parameters() if not torch.equal(p, before[n])]
    assert changed and not any("vision_model" in n for n in changed)  # synced, vision frozen
    assert "self_labeler_agreement" in rnd
    assert set(metrics["chair_i"]) >= {"before", "after"} and metrics["round_prompts"] == "fresh"
    assert not {str(r) for r in pairs["prompt_id"]} & set(shapes_small["train"]["id"])  # fresh scenes, not train rows
    change = metrics["change"]
    assert change["chair_i"]["delta"]["lo"] <= change["chair_i"]["delta"]["delta"] <= change["chair_i"]["delta"]["hi"]
    assert change["cover"]["n"] == metrics["heldout_descriptions"] == 4
    assert Path(ctx.model_path).name == "policy_rlaifv"
    bon = metrics["best_of_n"]
    held = len(rlaifv.heldout_descriptions(shapes_small["heldout"], 4))
    assert bon["n"] == 2 and bon["prompts"] == held > 0 and bon["failed_rollouts"] == 0 and bon["score_errors"] == 0
    assert set(bon) >= {"chair_i", "chair_s", "cover"} and set(bon["random_sample"]) == {"chair_i", "chair_s", "cover"}
