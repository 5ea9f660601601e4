"""Reading pretraining: the tiny model's stand-in for a pretrained language model.

Real policies start from a language model that already reads a list and answers a question about
it; the embedded tiny model starts from a random one, and the warm-up SFT (image in, reasoning
and answer out) does not teach it that: given a right inventory, its existence decision is at
chance and its answer follows its own reasoning about half the time (`python -m rl.show_answers
--reading`, README). Before the warm-up, this module trains the language model on text alone:
the deep-mode completions (inventory, lookup, answer) of questions about fresh generator scenes,
prompted without an image. The image cannot be read here, so the inventory is a guess; what can
be learnt is reading it: the lookup and the answer given the inventory.

Only the question types the warm-up teaches are used (the data's `short_qtypes` less
`warmup.exclude_qtypes`): the compositional ones left for RL stay untaught. Scenes whose
signature is a held-out or RL scene's are skipped. Pure example and loss-mask functions are at
the top; the loop needs torch.

`python -m rl.text_pretrain --steps 500 --qtypes colour,count,shape,relation,exists` runs it alone
on a fresh tiny model and prints the held-out answer-from-gold-inventory accuracy as it trains
(JSON lines): how fast a language model of that size learns to read an inventory at all.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rl.configlib import FieldError


@dataclass
class TextPretrainConfig:
    """`warmup.text_pretrain`: steps of text-only deep-completion training before the warm-up SFT."""

    steps: int = 0  # 0 = off (real models bring a pretrained language model)
    batch_size: int = 32
    learning_rate: float = 1e-3
    eval_rows: int = 100  # held-out rows the answer-from-gold-inventory accuracy is measured on
    # Train the inventory sentence too. Without an image it can only be guessed, and a model
    # taught to guess it keeps guessing once the image is there (measured: warm-up CHAIRi 0.16 ->
    # 0.53 on seed 0, README); false trains only the lookup and the answer given the gold inventory.
    train_inventory: bool = True

    def validate(self) -> None:
        if self.steps < 0:
            raise FieldError("text_pretrain.steps", f"must be >= 0 (0 = off), got {self.steps}")
        if self.batch_size < 1:
            raise FieldError("text_pretrain.batch_size", f"must be >= 1, got {self.batch_size}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise FieldError("text_pretrain.learning_rate", f"must be a positive number, got {self.learning_rate}")
        if self.eval_rows < 0:
            raise FieldError("text_pretrain.eval_rows", f"must be >= 0, got {self.eval_rows}")


def fresh_questions(rng: random.Random, n: int, qtypes: list[str], avoid: set[tuple], image_size: int = 64,
                    reasoning: str = "inventory", exists_reasoning: str = "lookup") -> list[dict[str, str]]:
    """`n` short questions (question, answer, reasoning, qtype) about new generator scenes whose
    signature is not in `avoid`, each qtype drawn from `qtypes` among those the scene supports."""
    from rl.data.scenes import random_scene
    from rl.data.shapes_questions import make_question

    out: list[dict[str, str]] = []
    while len(out) < n:
        scene = random_scene(rng, image_size)
        if scene.signature() in avoid:
            continue
        q = make_question(scene, "short", rng, qtypes, reasoning, exists_reasoning)
        if q is not None and q["qtype"] in qtypes:
            out.append(q)
    return out


def masked_batch(prompts: list[list[int]], completions: list[list[int]], pad_id: int) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    """(input ids, attention mask, labels) of prompt + completion rows, right-padded; labels are
    -100 on the prompt and the padding, so only completion tokens are trained."""
    rows = [p + c for p, c in zip(prompts, completions, strict=True)]
    width = max(map(len, rows))
    ids = [r + [pad_id] * (width - len(r)) for r in rows]
    mask = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
    labels = [[-100] * len(p) + c + [-100] * (width - len(p) - len(c)) for p, c in zip(prompts, completions, strict=True)]
    return ids, mask, labels


def _encode(processor: Any, question: str, reasoning: str, answer: str,
            train_inventory: bool = True) -> tuple[list[int], list[int]]:
    """(context ids, trained ids): the deep prompt without an image, and the gold completion; with
    `train_inventory` false the inventory sentence moves into the untrained context."""
    from policies.chat import render_prompt
    from rl.reading import gold_segments
    from rl.sft_data import eos_token_of

    tok = getattr(processor, "tokenizer", processor)
    prompt = render_prompt(processor, [{"role": "user", "content": question}], "deep", 0, 0)
    pieces = [text for _, text in gold_segments(reasoning, answer, eos_token_of(processor))]
    context = [prompt] if train_inventory else [prompt, pieces.pop(0)]
    encode = lambda texts: [i for t in texts for i in tok(t, add_special_tokens=False)["input_ids"]]  # noqa: E731
    return encode(context), encode(pieces)


def pretrain_reading(model: Any, processor: Any, cfg: TextPretrainConfig, qtypes: list[str], heldout_rows: Any,
                     avoid: set[tuple], image_size: int = 64, reasoning: str = "inventory",
                     exists_reasoning: str = "lookup", seed: int = 0, eval_every: int = 0,
                     on_eval: Callable[[int, float, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train `model` in place on text-only deep completions of fresh scenes' `qtypes` questions.

    Returns the answer-from-gold-inventory accuracy of up to `cfg.eval_rows` held-out rows of
    those qtypes, text only (`rl.reading.inventory_answers`), before and after; the first and last
    losses; seconds. With `eval_every` > 0, `on_eval(step, loss, accuracy)` is also called every
    that many steps.
    """
    import torch

    from rl.reading import inventory_answers

    cfg.validate()
    if not qtypes:
        raise FieldError("text_pretrain.steps", "no question type is left to pretrain on (data.shapes.short_qtypes "
                         "less warmup.exclude_qtypes is empty): add one or set it to 0")
    rows = [r for r in (heldout_rows or []) if r.get("qtype") in qtypes and r.get("reasoning")][: cfg.eval_rows]
    rows = [{**r, "images": [], "videos": []} for r in rows]
    pad = getattr(processor, "tokenizer", processor).pad_token_id
    was_training = model.training
    before = inventory_answers(model, processor, rows) if rows else {}
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    rng = random.Random(f"text_pretrain/{seed}")
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        batch = [_encode(processor, q["question"], q["reasoning"], q["answer"], cfg.train_inventory)
                 for q in fresh_questions(rng, cfg.batch_size, qtypes, avoid, image_size, reasoning, exists_reasoning)]
        ids, mask, labels = masked_batch([p for p, _ in batch], [c for _, c in batch], pad)
        loss = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if on_eval is not None and eval_every and step % eval_every == 0 and rows and step < cfg.steps:
            on_eval(step, losses[-1], inventory_answers(model, processor, rows))
            model.train()
    seconds = time.perf_counter() - t0
    optimizer.zero_grad(set_to_none=True)
    after = inventory_answers(model, processor, rows) if rows else {}
    model.train(was_training)
    return {
        "steps": cfg.steps,
        "qtypes": list(qtypes),
        "examples_seen": cfg.steps * cfg.batch_size,
        "heldout_rows": len(rows),
        "answer_from_gold_inventory_before": before,
        "answer_from_gold_inventory": after,
        "first_loss": losses[0] if losses else float("nan"),
        "final_loss": losses[-1] if losses else float("nan"),
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rl.text_pretrain", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--qtypes", default="colour,count,shape,relation,exists", help="comma-separated short qtypes")
    p.add_argument("--exists-reasoning", default="lookup", choices=["lookup", "filter"])
    p.add_argument("--size", default="tiny", choices=["tiny", "small"], help="tiny Idefics3 size to build")
    p.add_argument("--model", default="", help="a model folder to start from instead of a fresh tiny model")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-rows", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-inventory-loss", action="store_true", help="train only the lookup and the answer")
    args = p.parse_args(argv)
    import tempfile

    import torch

    from policies.loading import PolicyConfig, load_model, load_processor
    from policies.tiny import build_tiny_model
    from rl.data.shapes import make_shapes
    from rl.vision_pretrain import excluded_signatures

    qtypes = [q for q in args.qtypes.split(",") if q]
    torch.manual_seed(args.seed)
    folder = args.model or str(build_tiny_model(tempfile.mkdtemp(prefix="text_pretrain_") + "/model",
                                                 seed=args.seed, size=args.size))
    model = load_model(folder, PolicyConfig(name_or_path=folder))
    heldout = make_shapes(num_train_images=0, num_heldout_images=args.eval_rows, questions_per_image=2,
                          seed=args.seed, task_weights={"short": 1.0}, short_qtypes=qtypes,
                          exists_reasoning=args.exists_reasoning)["heldout"]

    def show(step: int, loss: float, accuracy: dict[str, float]) -> None:
        print(json.dumps({"step": step, "loss": round(loss, 4), "answer_from_gold_inventory": accuracy},
                         sort_keys=True), flush=True)

    cfg = TextPretrainConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                             eval_rows=args.eval_rows, train_inventory=not args.no_inventory_loss)
    out = pretrain_reading(model, load_processor(folder), cfg, qtypes, heldout, excluded_signatures(heldout),
                           exists_reasoning=args.exists_reasoning, seed=args.seed,
                           eval_every=args.eval_every, on_eval=show)
    show(out["steps"], out["final_loss"], out["answer_from_gold_inventory"])
    print(json.dumps({"size": args.size, "exists_reasoning": args.exists_reasoning, **out}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
