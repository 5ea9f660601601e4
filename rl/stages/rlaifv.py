"""Stage 3, RLAIF-V rounds: sample → claims → labels → preference pairs → DPO → sync.

Each round samples `n_samples` responses per description prompt from the current policy (one
decoding setting) through the rollout pool, splits them into claims, labels every claim with the
configured labeler (`make_round_labeler`: the policy itself reading P(yes) vs P(no) from the
pool's prompt log-probs, a separate VLM, the labeler model trained in the run by
`rl.train_labeler`, or the ground truth as an ablation), scores responses by −rejected claims,
builds length-balanced pairs, saves them as a parquet dataset (`rlaifv/round_K/pairs.parquet`)
and runs TRL's DPOTrainer with the round's starting policy as reference. The new weights are
synced to the pool before the next round. On Shapes data every round describes fresh generator
scenes (`round_prompts`). CHAIR metrics on greedy descriptions of every held-out image
(`heldout_rows`) are measured before the first and after every round; `chair_change` gives the
before → after changes with paired-bootstrap intervals.

With `best_of_n: true`, the final policy is also evaluated with best-of-N self-reward (RLAIF-V
§3.4): `best_of_n_samples` candidates per held-out description at the training temperature,
reranked by the length-normalised implicit DPO reward against the stage's starting policy, with
the first (unreranked) candidate as the baseline at the same temperature (`best_of_n_eval`).
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rl.context import RunContext

from rl.data.rows import row_images, row_request, row_videos
from rl.stages.rlaifv_eval import best_of_n_eval, chair_change, describe_chair, heldout_descriptions
from rollouts.types import SamplingSettings


def _sample(engine: Any, rows: list[dict[str, Any]], cfg: Any, rnd: int) -> list[Any]:
    sampling = SamplingSettings(temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed + rnd)
    reqs = [row_request(r, f"rlaifv-{rnd}-{r['id']}", cfg.mode, cfg.n_samples, sampling) for r in rows]
    return engine.generate(reqs)


def make_round_labeler(ctx: RunContext, processor: Any) -> tuple[Any, dict[str, Any]]:
    """The configured claim labeler and what to record about it: the policy's own pool (`self`),
    a separate VLM on its own actor (`model:<path-or-name>`), the labeler trained here
    (`trained`: `rl.train_labeler`, served in this process, it is tiny) or the ground truth
    (`oracle`)."""
    from rewards.rlaifv.labeler import ProbabilityLabeler, make_labeler

    cfg = ctx.cfg.rlaifv
    if cfg.labeler == "oracle":
        return make_labeler("oracle"), {}
    if cfg.labeler == "self":
        return ProbabilityLabeler.from_processor(ctx.engine, processor, source="self", temperature=cfg.labeler_temperature,
                                                 suffix=cfg.labeler_suffix), {}
    from policies.loading import load_model, load_processor

    if cfg.labeler == "trained":
        from policies.hf_engine import HFEngine
        from rl.train_labeler import ensure_labeler, make_trained_labeler

        with ctx.timed("rlaifv/labeler"):
            path, info = ensure_labeler(ctx)
        lab_processor = load_processor(path)
        engine = HFEngine(load_model(path, ctx.cfg.policy).eval(), lab_processor,
                          {"fast": cfg.max_tokens, "deep": cfg.max_tokens})
        return make_trained_labeler(engine, lab_processor, cfg.labeler_training, cfg.labeler_suffix,
                                    cfg.labeler_temperature, max_tokens=cfg.max_tokens, seed=ctx.cfg.seed), \
            {"path": path, **info}
    path = cfg.labeler.split(":", 1)[1]
    lab_processor = load_processor(path)
    if ctx.cfg.rollout.backend == "hf":
        from policies.hf_engine import HFEngine

        engine = HFEngine(load_model(path, ctx.cfg.policy).eval(), lab_processor)
    else:
        from rollouts.pool import RolloutPool

        engine = RolloutPool(path, ctx.cfg.rollout)
    return ProbabilityLabeler.from_processor(engine, lab_processor, source=cfg.labeler, temperature=cfg.labeler_temperature,
                                             suffix=cfg.labeler_suffix), {"path": path}


def build_round_pairs(engine: Any, processor: Any, rows: list[dict[str, Any]], cfg: Any, rnd: int,
                      labeler: Any = None) -> tuple[list[Any], dict[str, Any]]:
    """Sample, split, label (with `labeler`; the policy itself when None), score and pair one
    round's prompts; returns (pairs, stats)."""
    from rewards.rlaifv.claims import ShapesClaimSplitter
    from rewards.rlaifv.labeler import (
        LabelItem,
        ProbabilityLabeler,
        count_labels,
        labeler_agreement,
        make_labeler,
    )
    from rewards.rlaifv.pairs import build_pairs, length_balance, score_response
    from rewards.verifiers import extract_answer

    rollouts = _sample(engine, rows, cfg, rnd)
    splitter = ShapesClaimSplitter()
    items, owners = [], []
    responses: dict[str, list[tuple[int, str, list[Any]]]] = defaultdict(list)
    for row, ro in zip(rows, rollouts, strict=False):
        for k, comp in enumerate(ro.completions if ro.ok else []):
            text = extract_answer(comp.text)
            claims = splitter.split(text, str(row["id"]), k)
            responses[str(row["id"])].append((k, text, claims))
            for c in claims:
                items.append(LabelItem(c, row_images(row) + row_videos(row), row.get("scene")))
                owners.append((str(row["id"]), k))
    if labeler is None:
        labeler = ProbabilityLabeler.from_processor(engine, processor, source="self", temperature=cfg.labeler_temperature,
                                                    suffix=cfg.labeler_suffix)
    labels = labeler.label(items) if items else []
    by_resp: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for owner, lab in zip(owners, labels, strict=False):
        by_resp[owner].append(lab)
    scored = {
        pid: [score_response(pid, k, text, claims, by_resp[(pid, k)]) for k, text, claims in resps]
        for pid, resps in responses.items()
    }
    built = build_pairs(scored, seed=cfg.seed + rnd, max_pairs_per_prompt=cfg.max_pairs_per_prompt, min_gap=cfg.min_gap)
    pairs, ratio = built.pairs, None
    if cfg.length_balance and pairs:
        bal = length_balance(pairs)
        pairs, ratio = bal.pairs, bal.ratio
    counts = count_labels(labels)
    stats = {
        "prompts": len(rows), "responses": built.n_responses, "claims": len(items),
        "accepted": counts.accepted, "rejected": counts.rejected, "unparseable": counts.unparseable,
        "no_claim_responses": built.n_no_claims, "inconsistent_responses": built.n_inconsistent,
        "candidate_pairs": built.n_candidate_pairs, "pairs": len(pairs), "length_balance_ratio": ratio,
    }  # fmt: skip
    if labeler.source != "oracle" and items:
        stats["labeler_agreement"] = labeler_agreement(labels, make_labeler("oracle").label(items))
    elif items:  # oracle run: still measure how the policy as its own labeler would have done
        sample = items[:500]
        own = ProbabilityLabeler.from_processor(engine, processor, source="self", temperature=cfg.labeler_temperature,
                                                suffix=cfg.labeler_suffix)
        stats["self_labeler_agreement"] = labeler_agreement(own.label(sample), labels[: len(sample)])
    return pairs, stats


def pairs_dataset(pairs: list[Any], rows_by_id: dict[str, dict[str, Any]], processor: Any, mode: str):
    """TRL DPO rows (text prompt in `mode` with the media placeholders, chosen/rejected + eos, images
    and videos)."""
    import datasets

    from policies.chat import render_prompt
    from rl.data.shapes import FEATURES

    eos = processor.tokenizer.eos_token or ""
    records = []
    for p in pairs:
        row = rows_by_id[p.prompt_id]
        extra = p.to_row()
        images, videos = row_images(row), row.get("videos") or []
        records.append({
            "prompt": render_prompt(processor, list(row["prompt"]), mode, len(images), len(videos)),
            "chosen": p.chosen + eos, "rejected": p.rejected + eos, "images": images, "videos": videos,
            "prompt_id": p.prompt_id, "chosen_score": p.chosen_score, "rejected_score": p.rejected_score,
            "chosen_claims": [c.text for c in p.chosen_claims], "rejected_claims": [c.text for c in p.rejected_claims],
            "chosen_verdicts": list(extra.get("chosen_verdicts", [])), "rejected_verdicts": list(extra.get("rejected_verdicts", [])),
        })  # fmt: skip
    features = datasets.Features({
        "prompt": datasets.Value("string"), "chosen": datasets.Value("string"), "rejected": datasets.Value("string"),
        "images": datasets.Sequence(datasets.Image()), "videos": FEATURES["videos"], "prompt_id": datasets.Value("string"),
        "chosen_score": datasets.Value("int64"), "rejected_score": datasets.Value("int64"),
        "chosen_claims": datasets.Sequence(datasets.Value("string")), "rejected_claims": datasets.Sequence(datasets.Value("string")),
        "chosen_verdicts": datasets.Sequence(datasets.Value("string")), "rejected_verdicts": datasets.Sequence(datasets.Value("string")),
    })  # fmt: skip
    columns = {name: [r[name] for r in records] for name in features}
    return datasets.Dataset.from_dict(columns, features=features)


def dpo_update(ctx: RunContext, model: Any, processor: Any, dataset: Any, rnd: int, worker: Any = None) -> dict[str, Any]:
    """One round of TRL DPO on `dataset`; the reference is a frozen copy of the round's start.
    With `worker` this process is one rank of a trainer group (`per_device_train_batch_size` pairs
    per rank and step)."""
    from trl import DPOConfig, DPOTrainer

    from rl.config import check_trl_kwargs
    from rl.media_collators import with_videos
    from rl.trainer_group import check_distributed, group_callbacks

    dcfg = ctx.cfg.rlaifv.dpo
    check_trl_kwargs(DPOConfig, dcfg.trl, "rlaifv.dpo.trl")
    kwargs = dict(
        output_dir=str(ctx.out / "rlaifv" / f"round_{rnd}" / "dpo"), use_cpu=True, bf16=False,
        logging_steps=1, save_strategy="no", report_to=["tensorboard"], remove_unused_columns=False,
        seed=ctx.cfg.seed + rnd, dataloader_num_workers=0, max_length=None,
    )  # fmt: skip
    kwargs.update(dcfg.dpo_kwargs())
    from rl.interrupt import StopOnRequest

    stop = StopOnRequest(ctx.out, save=False)  # the RLAIF-V stage restarts on resume
    checks = group_callbacks(worker)
    trainer = DPOTrainer(model=model, args=DPOConfig(**kwargs), train_dataset=dataset, processing_class=processor,
                         callbacks=[stop, *checks])
    check_distributed(trainer, worker.world_size if worker else 1, f"RLAIF-V round {rnd} DPO")
    trainer.data_collator = with_videos(trainer.data_collator)  # video prompts' frames reach the processor
    trainer.train()
    stop.raise_if_stopped(f"RLAIF-V round {rnd} DPO")
    out = {"steps": trainer.state.global_step, "log": trainer.state.log_history, "trainer": trainer}
    if checks:
        out["rank_checks"] = checks[0].checks
    return out


def load_policy(ctx: RunContext) -> tuple[Any, Any]:
    """(model, processor) of `ctx.model_path`, vision tower frozen when configured."""
    from policies.loading import freeze_vision, load_model, load_processor

    processor = load_processor(ctx.model_path, ctx.cfg.policy.trust_remote_code)
    model = load_model(ctx.model_path, ctx.cfg.policy)
    if ctx.cfg.policy.freeze_vision:
        freeze_vision(model)
    return model, processor


def dpo_on_worker(worker: Any, payload: dict[str, Any], dataset: Any, rnd: int, save_to: str) -> dict[str, Any]:
    """One rank of a DPO round's trainer group: train from the round's start (`payload`'s policy),
    push the result to the rollout pool from rank 0 (when the run has one), save it to `save_to`
    (rank 0)."""
    from rl.stages.grpo import push_weights
    from rl.trainer_group import save_trained, worker_ctx

    ctx = worker_ctx(payload)
    model, processor = load_policy(ctx)
    dpo = dpo_update(ctx, model, processor, dataset, rnd, worker)
    sync = push_weights(ctx.engine, model, worker) if ctx.engine is not None else None
    save_trained(dpo.pop("trainer"), model, processor, save_to, worker)
    return {**dpo, "synced_version": sync.version if sync else None,
            "pool_version": ctx.engine.version if ctx.engine is not None else None}


def dpo_round(ctx: RunContext, model: Any, processor: Any, dataset: Any, rnd: int) -> dict[str, Any]:
    """Train one round's DPO and sync the pool to the result: in this process on `model`, or on the
    run's trainer group (`model` is None), whose rank 0 saves `rlaifv/round_K/policy`, which becomes
    `ctx.model_path`. Returns the DPO steps and log and the synced version."""
    from rl.trainer_group import ctx_payload, group_spec, run_group

    spec = group_spec(ctx)
    if spec is None:
        dpo = dpo_update(ctx, model, processor, dataset, rnd)
        dpo.pop("trainer")
        return {**dpo, "synced_version": ctx.engine.sync_from_model(model).version}
    save_to = str(ctx.out / "rlaifv" / f"round_{rnd}" / "policy")
    out = run_group(dpo_on_worker, (ctx_payload(ctx), dataset, rnd, save_to), spec, ctx.out, f"rlaifv-round{rnd}")
    ctx.engine.adopt_version(out.pop("pool_version"))
    ctx.model_path = ctx.engine_path = save_to
    return out


def heldout_rows(ctx: RunContext) -> list[dict[str, Any]]:
    """The fixed held-out description prompts CHAIR is measured on (`eval.max_examples` caps them)."""
    cfg = ctx.cfg.rlaifv
    if cfg.describe_every_heldout_image:
        return heldout_descriptions(ctx.data.eval, ctx.cfg.eval.max_examples)
    held = ctx.data.eval.filter(lambda t: t == "description", input_columns="task")
    return [held[i] for i in range(min(len(held), ctx.cfg.eval.max_examples or len(held)))]


def round_prompts(ctx: RunContext) -> Any:
    """`rnd -> rows`: each round's description prompts. Fresh generator scenes per round (stream
    `rlaifv-<run seed>-<rlaifv.seed>-<rnd>`, never a train, RL or held-out scene) with `fresh_scenes` on Shapes data;
    otherwise a sample of the train split's description rows."""
    cfg = ctx.cfg.rlaifv
    if cfg.fresh_scenes and ctx.cfg.data.source == "shapes":
        from rl.data.shapes import description_rows
        from rl.vision_pretrain import excluded_signatures

        avoid = excluded_signatures(ctx.data.eval, ctx.data.train, getattr(ctx.data, "rl", None))

        def fresh(rnd: int) -> list[dict[str, Any]]:
            split = f"rlaifv-{ctx.cfg.seed}-{cfg.seed}-{rnd}"
            rows = description_rows(split, cfg.prompts_per_round, ctx.cfg.data.shapes, avoid)
            return [rows[i] for i in range(len(rows))]

        return fresh
    train = ctx.data.train.filter(lambda t: t == "description", input_columns="task")
    rng = random.Random(cfg.seed)

    def sample(rnd: int) -> list[dict[str, Any]]:
        return [train[i] for i in rng.sample(range(len(train)), min(cfg.prompts_per_round, len(train)))]

    return sample


def run(ctx: RunContext) -> dict[str, Any]:
    import shutil

    from policies.loading import load_model, load_processor
    from rl.interrupt import check_stop
    from rl.trainer_group import group_spec

    cfg = ctx.cfg.rlaifv
    start_path = ctx.model_path  # the reference of best-of-N: the policy the stage started from
    if group_spec(ctx) is None:
        model, processor = load_policy(ctx)
    else:  # the rounds train on the trainer group from the saved policy of the round before
        model, processor = None, load_processor(ctx.model_path, ctx.cfg.policy.trust_remote_code)
    held_rows = heldout_rows(ctx)
    chair = [describe_chair(ctx.engine, held_rows, cfg.mode, ctx.cfg.seed)]
    rounds, total_steps = [], 0
    labeler, labeler_info = make_round_labeler(ctx, processor)
    next_rows = round_prompts(ctx)
    for rnd in range(cfg.rounds):
        check_stop(ctx.out, f"before RLAIF-V round {rnd}")
        rows = next_rows(rnd)
        with ctx.timed(f"rlaifv/round_{rnd}/pairs"):
            pairs, stats = build_round_pairs(ctx.engine, processor, rows, cfg, rnd, labeler)
        folder = ctx.out / "rlaifv" / f"round_{rnd}"
        folder.mkdir(parents=True, exist_ok=True)
        dataset = pairs_dataset(pairs, {str(r["id"]): r for r in rows}, processor, cfg.mode)
        dataset.to_parquet(str(folder / "pairs.parquet"))
        if len(dataset):
            with ctx.timed(f"rlaifv/round_{rnd}/dpo"):
                dpo = dpo_round(ctx, model, processor, dataset, rnd)
            stats.update(dpo_steps=dpo["steps"], dpo_log=dpo["log"], synced_version=dpo["synced_version"])
            stats.update({k: dpo[k] for k in ("rank_checks", "group") if k in dpo})
            total_steps += dpo["steps"]
        chair.append(describe_chair(ctx.engine, held_rows, cfg.mode, ctx.cfg.seed))
        stats["chair"] = chair[-1]
        rounds.append(stats)
    change = chair_change(chair[0], chair[-1], seed=ctx.cfg.seed)
    fresh = cfg.fresh_scenes and ctx.cfg.data.source == "shapes"
    final = ctx.out / "policy_rlaifv"
    if model is not None:
        model.save_pretrained(final)
        processor.save_pretrained(final)
    else:
        shutil.copytree(ctx.model_path, final, dirs_exist_ok=True)
    ctx.model_path = ctx.engine_path = str(final)
    best = None
    if cfg.best_of_n:
        from policies.scoring import HFScorer

        del model  # saved; the engine holds the synced weights
        with ctx.timed("rlaifv/best_of_n"):
            ref = load_model(start_path, ctx.cfg.policy).eval()
            best = best_of_n_eval(ctx.engine, HFScorer(ref, processor), held_rows, cfg, ctx.cfg.seed)
            del ref
    for c in chair:  # the per-response counts went into the intervals; the metrics keep the totals
        c.pop("per_response", None)
    return {
        "steps": total_steps, "labeler": cfg.labeler, "labeler_model": labeler_info or None, "rounds": rounds,
        "heldout_descriptions": len(held_rows), "change": change, "round_prompts": "fresh" if fresh else "train",
        "chair_i": {"before": chair[0]["chair_i"], "after": chair[-1]["chair_i"], "per_round": [c["chair_i"] for c in chair]},
        "chair_s": {"before": chair[0]["chair_s"], "after": chair[-1]["chair_s"], "per_round": [c["chair_s"] for c in chair]},
        "cover": {"before": chair[0]["cover"], "after": chair[-1]["cover"]},
        "best_of_n": best,
    }  # fmt: skip
