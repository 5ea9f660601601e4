"""Reading pretraining (rl.text_pretrain): batches, fresh questions, config errors, that it trains
the language model alone, and the answer-from-gold-inventory measure (rl.reading)."""

from __future__ import annotations

import random

import pytest

from rl.configlib import FieldError
from rl.text_pretrain import TextPretrainConfig, fresh_questions, masked_batch, pretrain_reading


def test_masked_batch_trains_only_completion_tokens():
    ids, mask, labels = masked_batch([[1, 2], [3]], [[4, 5], [6, 7, 8]], pad_id=0)
    assert ids == [[1, 2, 4, 5], [3, 6, 7, 8]]
    assert mask == [[1, 1, 1, 1], [1, 1, 1, 1]]
    assert labels == [[-100, -100, 4, 5], [-100, 6, 7, 8]]
    ids, mask, labels = masked_batch([[1]], [[2]], pad_id=9)  # one row: no padding
    assert (ids, mask, labels) == ([[1, 2]], [[1, 1]], [[-100, 2]])
    ids, mask, labels = masked_batch([[1], [1, 2, 3]], [[2], [4]], pad_id=9)
    assert ids[0] == [1, 2, 9, 9] and mask[0] == [1, 1, 0, 0] and labels[0] == [-100, 2, -100, -100]


def test_config_errors_name_the_field():
    with pytest.raises(FieldError, match="text_pretrain.steps"):
        TextPretrainConfig(steps=-1).validate()
    with pytest.raises(FieldError, match="text_pretrain.learning_rate"):
        TextPretrainConfig(learning_rate=float("nan")).validate()
    with pytest.raises(FieldError, match="text_pretrain.batch_size"):
        TextPretrainConfig(batch_size=0).validate()


def test_fresh_questions_keep_to_the_qtypes_and_avoid_scenes():
    """Only the asked qtypes come back, and a scene to avoid is never asked about."""
    from rl.data.scenes import random_scene
    from rl.data.shapes_questions import inventory

    rng = random.Random(3)
    drawn = [random_scene(rng) for _ in range(200)]
    avoid = {s.signature() for s in drawn[:100]}
    avoided = {inventory(s) for s in drawn[:100]} - {inventory(s) for s in drawn[100:]}
    got = fresh_questions(random.Random(3), 60, ["exists", "colour"], avoid)
    assert len(got) == 60 and {q["qtype"] for q in got} <= {"exists", "colour"}
    assert not {q["reasoning"].split(". ")[0] + "." for q in got} & avoided


def test_non_shapes_data_gives_a_clear_error():
    from types import SimpleNamespace

    from rl.stages.warmup import WarmupConfig, pretrain_language

    ctx = SimpleNamespace(cfg=SimpleNamespace(data=SimpleNamespace(source="files"), seed=0), data=None)
    with pytest.raises(FieldError, match="warmup.text_pretrain.steps=0"):
        pretrain_language(ctx, WarmupConfig(), None, None)


def test_no_qtype_left_is_an_error(tiny_model_dir):
    with pytest.raises(FieldError, match="exclude_qtypes"):
        pretrain_reading(None, None, TextPretrainConfig(steps=1), [], None, set())


def test_pretraining_trains_the_language_model_only(tiny_model_dir):
    """Text-only steps lower the completion loss and move language-model weights; the vision
    tower and connector get no gradient and stay as they were."""
    import torch

    from policies.loading import PolicyConfig, load_model, load_processor
    from rl.data.shapes import make_shapes

    data = make_shapes(num_train_images=4, num_heldout_images=20, questions_per_image=2, seed=5)
    model = load_model(tiny_model_dir, PolicyConfig(name_or_path=tiny_model_dir))
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    out = pretrain_reading(model, load_processor(tiny_model_dir),
                           TextPretrainConfig(steps=40, batch_size=8, learning_rate=2e-3, eval_rows=6),
                           ["colour", "exists"], data["heldout"], set(), exists_reasoning="filter")
    assert out["examples_seen"] == 320 and out["heldout_rows"] <= 6 and out["qtypes"] == ["colour", "exists"]
    assert out["final_loss"] < 0.5 * out["first_loss"], out
    assert set(out["answer_from_gold_inventory"]) <= {"all", "colour", "exists"}
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and not any(("vision" in k or "connector" in k) for k in changed), sorted(changed)[:5]


class FakeReader:
    """A fake model whose `generate` appends a fixed continuation per question (looked up in the
    decoded prompt): checks how `inventory_answers` builds the prompt and scores the answer."""

    def __init__(self, tok, continuations: dict[str, str]):
        self.tok, self.continuations, self.training, self.prompts = tok, continuations, False, []

    def eval(self):
        return self

    def train(self, mode=True):
        self.training = mode
        return self

    def generate(self, input_ids, **_):
        import torch

        text = self.tok.decode(input_ids[0])
        self.prompts.append(text)
        tail = next(v for k, v in self.continuations.items() if k in text)
        extra = self.tok(tail, add_special_tokens=False)["input_ids"]
        return torch.cat([input_ids, torch.tensor([extra])], dim=1)


def test_inventory_answers_score_the_answer_after_the_gold_inventory(tiny_model_dir, shapes_small):
    from policies.chat import THINK_CLOSE, THINK_OPEN
    from policies.loading import load_processor
    from rl.reading import inventory_answers

    processor = load_processor(tiny_model_dir)
    tok = processor.tokenizer
    rows = [r for r in shapes_small["heldout"] if r["qtype"] in {"colour", "exists", "count"}][:3]
    assert len(rows) == 3
    right = FakeReader(tok, {r["question"]: f" Looked.{THINK_CLOSE}\n\n{r['answer']}<|im_end|>junk" for r in rows})
    out = inventory_answers(right, processor, rows)
    assert out["all"] == 1.0 and right.training is False
    for row, prompt in zip(rows, right.prompts, strict=True):
        assert prompt.endswith(THINK_OPEN + row["reasoning"].split(". ")[0] + ".")
    wrong = FakeReader(tok, {r["question"]: f" Looked.{THINK_CLOSE}\n\nmaybe" for r in rows})
    assert inventory_answers(wrong, processor, rows)["all"] == 0.0


def test_command_prints_the_accuracy_as_it_trains(tiny_model_dir, capsys):
    import json

    from rl.text_pretrain import main

    assert main(["--model", tiny_model_dir, "--steps", "4", "--eval-every", "2", "--eval-rows", "4",
                 "--batch-size", "4", "--qtypes", "colour,exists", "--exists-reasoning", "filter"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [line["step"] for line in lines[:-1]] == [2, 4]
    assert lines[-1]["steps"] == 4 and lines[-1]["qtypes"] == ["colour", "exists"]
    assert lines[-1]["exists_reasoning"] == "filter" and "all" in lines[-1]["answer_from_gold_inventory"]


def test_inventory_can_be_left_out_of_the_loss(tiny_model_dir):
    """`train_inventory=False` moves the inventory sentence into the untrained context: the same
    tokens in the same order, only the lookup and the answer trained."""
    from policies.chat import THINK_CLOSE, THINK_OPEN
    from policies.loading import load_processor
    from rl.text_pretrain import _encode

    processor = load_processor(tiny_model_dir)
    tok = processor.tokenizer
    reasoning = "I see a small green triangle at the top left. There is only one triangle, and it is green."
    full = _encode(processor, "What colour is the triangle?", reasoning, "green")
    lookup_only = _encode(processor, "What colour is the triangle?", reasoning, "green", train_inventory=False)
    assert full[0] + full[1] == lookup_only[0] + lookup_only[1]
    assert tok.decode(full[1]).startswith(THINK_OPEN + "I see")
    assert tok.decode(lookup_only[0]).endswith(THINK_OPEN + "I see a small green triangle at the top left.")
    assert tok.decode(lookup_only[1]).startswith(" There is only one triangle") and THINK_CLOSE in tok.decode(lookup_only[1])
