"""Warm-up SFT: the two-mode SFT examples, the trained-token mask, and a short real SFT run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from policies.chat import FAST_PREFILL, THINK_CLOSE, THINK_OPEN
from rl.configlib import ConfigError, FieldError
from rl.sft_data import build_sft_dataset, plan_examples
from rl.stages.warmup import WarmupConfig


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def sft(processor, shapes_small):
    return build_sft_dataset(processor, shapes_small["train"], seed=0)


def test_examples_cover_both_modes_and_every_task(sft, shapes_small):
    train = shapes_small["train"]
    hard = sum(q in ("relation", "count") for q in train["qtype"])
    assert len(sft) == 2 * (len(train) + hard)  # both modes per row, hard rows twice
    assert sft["mode"].count("deep") == sft["mode"].count("fast")
    assert set(sft["task"]) == set(train["task"])
    assert "exists" in set(sft["qtype"]) and "describe" in set(sft["qtype"])


def test_fast_and_deep_texts(sft, processor):
    eos = processor.tokenizer.eos_token
    assert eos == "<|im_end|>"
    for ex in sft:
        assert ex["completion"].endswith(eos) and ex["completion"].count(eos) == 1
        assert ex["prompt"].count("<image>") == 1 and len(ex["images"]) == 1 and ex["videos"] == []
        if ex["mode"] == "fast":
            assert ex["prompt"].endswith(FAST_PREFILL)
            assert THINK_OPEN not in ex["completion"] and THINK_CLOSE not in ex["completion"]
        else:
            assert ex["prompt"].endswith("<|im_start|>assistant\n")
            assert ex["completion"].startswith(THINK_OPEN)
            assert ex["completion"].count(THINK_CLOSE) == 1 and ex["completion"].count(THINK_OPEN) == 1


def test_prefill_is_not_trained(sft, processor):
    """The collator's labels: the pre-filled think block is -100, the completion is trained."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    collator = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)
    tok = processor.tokenizer
    fast = [i for i, m in enumerate(sft["mode"]) if m == "fast"][:3]
    deep = [i for i, m in enumerate(sft["mode"]) if m == "deep"][:3]
    rows = [sft[i] for i in fast + deep]
    batch = collator([{k: r[k] for k in ("prompt", "completion", "images")} for r in rows])
    prefill = tok(FAST_PREFILL, add_special_tokens=False)["input_ids"]
    think_open = tok.convert_tokens_to_ids(THINK_OPEN)
    for i, row in enumerate(rows):
        ids, labels = batch["input_ids"][i].tolist(), batch["labels"][i].tolist()
        trained = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
        assert trained == tok(row["completion"], add_special_tokens=False)["input_ids"]
        first = labels.index(next(lab for lab in labels if lab != -100))
        if row["mode"] == "fast":
            assert ids[first - len(prefill) : first] == prefill  # the block sits right before...
            assert all(lab == -100 for lab in labels[:first])  # ...and is context only
            assert think_open not in trained
        else:
            assert trained[0] == think_open


def test_plan_mode_mix_weights_and_cap():
    rows = [{"qtype": q} for q in ("colour", "relation", "count", "exists")] * 25
    both = plan_examples(rows)
    assert len(both) == 2 * (100 + 50)
    one = plan_examples(rows, mode_mix=0.25, hard_weight=3, seed=1)
    assert len(one) == 50 + 50 * 3  # one example per copy; hard rows three copies
    share = sum(m == "deep" for _, m in one) / len(one)
    assert 0.1 < share < 0.4
    assert {m for _, m in plan_examples(rows, mode_mix=1.0)} == {"deep"}
    assert plan_examples(rows, max_examples=7, seed=2) == plan_examples(rows, max_examples=7, seed=2)
    assert len(plan_examples(rows, max_examples=7)) == 7
    assert plan_examples(rows, seed=0) != plan_examples(rows, seed=1)


def test_config_checks():
    WarmupConfig(trl={"lr_scheduler_type": "linear"}).validate()
    with pytest.raises(ConfigError, match="warmup.trl.not_a_field"):
        WarmupConfig(trl={"not_a_field": 1}).validate()
    with pytest.raises(FieldError, match="use warmup.learning_rate"):
        WarmupConfig(trl={"learning_rate": 1e-3}).validate()
    with pytest.raises(FieldError, match="mode_mix"):
        WarmupConfig(mode_mix=1.5).validate()
    with pytest.raises(FieldError, match="steps"):
        WarmupConfig(steps=-1).validate()


def _batch_loss(model_dir: str, rows) -> float:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    collator = DataCollatorForVisionLanguageModeling(
        AutoProcessor.from_pretrained(model_dir), completion_only_loss=True
    )
    with torch.no_grad():
        return float(
            model(**collator([{k: r[k] for k in ("prompt", "completion", "images")} for r in rows])).loss
        )


def test_warmup_stage_trains_saves_and_evaluates(tmp_path, tiny_model_dir, shapes_small, sft):
    import torch
    from safetensors.torch import load_file

    from rl.config import TrainConfig
    from rl.context import RunContext
    from rl.stages import warmup

    cfg = TrainConfig(seed=0)
    cfg.eval.max_examples = 4
    cfg.rollout.max_tokens = {"deep": 12, "fast": 4}
    cfg.warmup = WarmupConfig(steps=8, batch_size=8, learning_rate=3e-3, logging_steps=2)
    data = SimpleNamespace(train=shapes_small["train"], eval=shapes_small["heldout"])
    ctx = RunContext(cfg=cfg, out=tmp_path, data=data, model_path=tiny_model_dir)
    rows = [sft[i] for i in range(8)]
    before = _batch_loss(tiny_model_dir, rows)

    metrics = warmup.run(ctx)

    assert ctx.model_path == str(tmp_path / "policy_warmup")
    assert metrics["steps"] == 8 and metrics["train_loss"] > 0 and metrics["train_seconds"] > 0
    assert set(metrics["heldout_accuracy"]) == {"deep", "fast", "mean"}
    assert set(metrics["mean_completion_tokens"]) == {"deep", "fast"}
    assert set(metrics["accuracy_by_task"]) == {"deep", "fast"}
    assert list((tmp_path / "tb" / "warmup").glob("events.out.tfevents.*"))
    after = _batch_loss(ctx.model_path, rows)  # the saved folder loads with the Auto classes
    assert after < before - 0.5, (before, after)
    old = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    new = load_file(str(Path(ctx.model_path) / "model.safetensors"))
    assert old.keys() == new.keys()
    text_changed = [k for k in old if "text_model" in k and not torch.equal(old[k], new[k])]
    assert len(text_changed) >= len([k for k in old if "text_model" in k]) // 2
    assert any("vision_model" in k and not torch.equal(old[k], new[k]) for k in old)  # train_vision


def test_split_param_groups_scales_only_the_image_path():
    import torch

    from rl.sft_trainer import split_param_groups

    params = {n: torch.nn.Parameter(torch.zeros(1)) for n in (
        "model.vision_model.encoder.layers.0.mlp.fc1.weight",
        "model.connector.modality_projection.proj.weight",
        "model.text_model.layers.0.mlp.up_proj.weight",
        "lm_head.weight",
    )}
    names = {id(p): n for n, p in params.items()}
    groups = [{"params": list(params.values()), "weight_decay": 0.1, "lr": 1e-3}]
    split = split_param_groups(groups, names, lr=1e-3, scale=4.0)
    by_lr = {g["lr"]: sorted(names[id(p)] for p in g["params"]) for g in split}
    assert by_lr == {
        1e-3: ["lm_head.weight", "model.text_model.layers.0.mlp.up_proj.weight"],
        4e-3: ["model.connector.modality_projection.proj.weight", "model.vision_model.encoder.layers.0.mlp.fc1.weight"],
    }
    assert all(g["weight_decay"] == 0.1 for g in split)


def test_trainer_optimizer_and_length_groups(tmp_path, tiny_model_dir, processor, sft):
    """The subclass's optimizer holds the vision tower at the scaled lr; length grouping keeps
    its column through the trainer and cuts padding against random batches."""
    from transformers import AutoModelForImageTextToText

    from rl.sft_data import add_lengths
    from rl.sft_trainer import WarmupSFTTrainer
    from rl.stages.warmup import sft_args

    with pytest.raises(FieldError, match="vision_lr_scale"):
        WarmupConfig(vision_lr_scale=0).validate()
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    dataset = add_lengths(processor, sft)
    assert min(dataset["length"]) > 0 and max(dataset["length"]) > 2 * min(dataset["length"])

    def padded_share(group: bool) -> float:
        cfg = WarmupConfig(steps=4, batch_size=8, group_by_length=group, vision_lr_scale=3.0)
        trainer = WarmupSFTTrainer(model=model, args=sft_args(cfg, tmp_path, 0, True), train_dataset=dataset,
                                   processing_class=processor, vision_lr_scale=cfg.vision_lr_scale)
        lrs = {}
        for g in trainer.create_optimizer().param_groups:
            for p in g["params"]:
                lrs[g["lr"]] = lrs.get(g["lr"], 0) + p.numel()
        assert set(lrs) == {cfg.learning_rate, 3.0 * cfg.learning_rate}
        pad = total = 0
        for i, batch in enumerate(trainer.get_train_dataloader()):
            if i == 6:
                break
            pad += int((batch["attention_mask"] == 0).sum())
            total += batch["attention_mask"].numel()
        return pad / total

    assert padded_share(True) < 0.5 * padded_share(False)
