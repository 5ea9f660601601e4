"""Teacher-forced reading of the gold deep-mode completion: which part of the reasoning a policy
gets wrong when every earlier token is given.

Deep mode answers in three parts: an opening inventory sentence ("I see a small green triangle at
the bottom right."), the lookup that reads it for the question ("There is only one triangle, and
it is green."), and the final answer after the think block ("green"). Free generation mixes their
errors (a wrong inventory makes a right lookup wrong). Here the policy is fed the row's gold
completion and scored, token by token, on its greedy prediction of the next token: the inventory
share measures perception, the lookup and answer shares measure whether the language model can
read a right inventory at all. Only the words a scene decides are scored (colours, shapes, sizes;
the template words around them are near 1.0 for any policy), plus the lookup's first token, its
`decision` ("None of them ..." against "The yellow circle ..." for exists, "There is only one
..." against "The only ..." elsewhere). `inventory_answers` is the free-running view: the policy
is given the gold inventory sentence and generates the rest greedily; its final answer is scored.
`python -m rl.show_answers --reading` prints both summaries.
"""

from __future__ import annotations

from typing import Any

from policies.chat import THINK_CLOSE, THINK_OPEN, render_prompt
from rl.data.scenes import COLOURS, SHAPES, SIZES
from rl.sft_data import deep_completion, eos_token_of

SEGMENTS = ("inventory", "decision", "lookup", "answer")
SCENE_WORDS = frozenset(COLOURS + SHAPES + SIZES + tuple(s + "s" for s in SHAPES))


def scored_names(pieces: list[tuple[str, list[str]]]) -> list[str]:
    """The segment each token is scored in, from (segment, token texts) pieces: the answer's
    tokens all count, the lookup's first token is its `decision`, and otherwise only scene words
    (`SCENE_WORDS`) count; "" marks a token that is not scored."""
    names: list[str] = []
    for name, tokens in pieces:
        for i, text in enumerate(tokens):
            if name == "answer":
                names.append(name)
            elif name == "lookup" and i == 0:
                names.append("decision")
            elif name and text.strip().lower() in SCENE_WORDS:
                names.append(name)
            else:
                names.append("")
    return names


def gold_segments(reasoning: str, answer: str, eos: str) -> list[tuple[str, str]]:
    """The gold deep completion cut into (segment, text) pieces whose texts join to
    `deep_completion(reasoning, answer, eos)`; pieces named "" are not scored (the think close
    and the eos). Cuts fall before a space, where byte-level tokenizers start a new token."""
    reasoning = reasoning.strip()
    first, sep, rest = reasoning.partition(". ")
    head = first + "." if sep else reasoning
    tail = " " + rest if sep else ""
    pieces = [("inventory", THINK_OPEN + head), ("lookup", tail), ("", THINK_CLOSE + "\n\n"),
              ("answer", answer), ("", eos)]
    pieces = [(name, text) for name, text in pieces if text]
    assert "".join(t for _, t in pieces) == deep_completion(reasoning, answer, eos)
    return pieces


def segment_accuracy(predicted: list[int], target: list[int], names: list[str]) -> dict[str, tuple[int, int]]:
    """(right, total) per segment name from aligned next-token predictions, targets and the
    segment of each target; unnamed ("") targets are skipped."""
    out: dict[str, tuple[int, int]] = {}
    for p, t, name in zip(predicted, target, names, strict=True):
        if not name:
            continue
        right, total = out.get(name, (0, 0))
        out[name] = (right + int(p == t), total + 1)
    return out


def row_reading(model: Any, processor: Any, row: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Teacher-forced (right, total) per segment of one row with a gold `reasoning`."""
    import torch

    tok = getattr(processor, "tokenizer", processor)
    images = list(row.get("images") or [])
    prompt = render_prompt(processor, list(row["prompt"]), "deep", len(images), 0)
    enc = processor(text=[prompt], images=[images] if images else None, return_tensors="pt")
    ids: list[int] = enc["input_ids"][0].tolist()
    pieces: list[tuple[str, list[str]]] = []
    for name, text in gold_segments(row["reasoning"], str(row["answer"]), eos_token_of(processor)):
        piece = tok(text, add_special_tokens=False)["input_ids"]
        ids += piece
        pieces.append((name, [tok.decode([i]) for i in piece]))
    names = scored_names(pieces)
    enc["input_ids"] = torch.tensor([ids])
    enc["attention_mask"] = torch.ones_like(enc["input_ids"])
    with torch.no_grad():
        logits = model(**enc).logits[0]
    start = len(ids) - len(names)
    predicted = logits[start - 1: len(ids) - 1].argmax(-1).tolist()
    return segment_accuracy(predicted, ids[start:], names)


def reading_summary(model: Any, processor: Any, rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per qtype and over all (key "all"): n rows and the teacher-forced next-token accuracy of
    each scored segment (`SEGMENTS`) of the gold deep completion. Rows without a gold
    reasoning are skipped."""
    totals: dict[str, dict[str, list[int]]] = {}
    counts: dict[str, int] = {}
    for row in rows:
        if not row.get("reasoning"):
            continue
        scored = row_reading(model, processor, row)
        for key in (str(row.get("qtype") or row["task"]), "all"):
            counts[key] = counts.get(key, 0) + 1
            d = totals.setdefault(key, {})
            for name, (right, total) in scored.items():
                acc = d.setdefault(name, [0, 0])
                acc[0] += right
                acc[1] += total
    return {key: {"n": counts[key], **{name: round(r / t, 4) for name, (r, t) in d.items() if t}}
            for key, d in totals.items()}


def inventory_answers(model: Any, processor: Any, rows: list[dict[str, Any]], max_new_tokens: int = 64) -> dict[str, float]:
    """Per qtype and over all ("all"): the share of rows answered right when the policy is given
    the prompt (with the row's images) and the gold inventory sentence after `<think>`, and
    generates the lookup and the answer greedily. Rows without a gold reasoning are skipped."""
    import torch

    from rl.evaluate import is_correct

    tok = getattr(processor, "tokenizer", processor)
    tally: dict[str, list[int]] = {}
    was_training = model.training
    model.eval()
    for row in rows:
        if not row.get("reasoning"):
            continue
        images = list(row.get("images") or [])
        head = gold_segments(row["reasoning"], str(row["answer"]), eos_token_of(processor))[0][1]
        prompt = render_prompt(processor, list(row["prompt"]), "deep", len(images), 0) + head
        enc = processor(text=[prompt], images=[images] if images else None, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        text = head + tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=False)
        text = text.split(eos_token_of(processor))[0]
        for key in (str(row.get("qtype") or row["task"]), "all"):
            t = tally.setdefault(key, [0, 0])
            t[0] += int(is_correct(row, text))
            t[1] += 1
    model.train(was_training)
    return {key: round(right / total, 4) for key, (right, total) in tally.items()}
