"""The separate RLAIF-V labeler model (`rlaifv.labeler: trained`): trained here, cached, measured.

RLAIF-V labels each claim of a sampled response with an open MLLM. Real runs point
`rlaifv.labeler: model:<path-or-name>` at a pretrained VLM. On the embedded default there is no
such model, and the tiny policy cannot judge its own claims (its yes/no existence answers are at
chance), so `trained` builds a labeler of the policy's tiny family from scratch on fresh
generator scenes (never a held-out, train or RL scene), with the random vision tower first
pretrained on per-cell labels (`rl.vision_pretrain`, the stand-in for a pretrained encoder):

* `protocol: describe` (default): it learns clean descriptions of the fresh scenes (fast mode)
  and labels claims by describing each image once and checking the claims against its own
  description (`rewards.rlaifv.describe_labeler`);
* `protocol: yesno`: it learns to answer the claim splitter's own yes/no questions about the
  fresh scenes (object claims half true, half false, the false ones half POPE-"random", half
  "adversarial": an absent pair sharing its colour or its shape with a present object; position
  claims half true, half false), on the labeler's prompt, and labels as RLAIF-V does (P(yes) vs
  P(no), `ProbabilityLabeler`). Kept to reproduce the measured negative result: the tiny model
  stays at chance however the prompt is ordered (README).

The model is saved in Hugging Face format under `<cache_dir or output_dir>/labeler-<key>`, `key`
the hash of everything that decides it, and reused by every run and grid cell that asks for the
same labeler. Its balanced agreement with the ground truth on held-out scenes' claims (half true,
half false) is measured once and stored beside it (`labeler.json`).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rl.configlib import FieldError
from rl.vision_pretrain import VisionPretrainConfig

PROTOCOLS = ("describe", "yesno")
INFO = "labeler.json"  # written last: its presence marks a complete labeler folder


def _default_vision() -> VisionPretrainConfig:
    return VisionPretrainConfig(steps=600, batch_size=64, learning_rate=1e-3, eval_images=0)


@dataclass
class LabelerTraining:
    """`rlaifv.labeler_training`: how `labeler: trained` builds its model (cached by content)."""

    protocol: Literal["describe", "yesno"] = "describe"
    images: int = 6000  # fresh scenes it learns from (describe: one description each; yesno: 4 questions)
    steps: int = 400
    batch_size: int = 32
    learning_rate: float = 1e-3
    vision: VisionPretrainConfig = field(default_factory=_default_vision)
    media_last: bool = True  # yesno: the question before the image in the prompt
    eval_images: int = 200  # held-out images whose claims measure it once trained (0 = none)
    seed: int = 0  # the labeler's own init and scene stream (not the run's seed: one labeler per grid)
    cache_dir: str = ""  # "" = the run's output_dir; a shared folder lets runs reuse one labeler

    def validate(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise FieldError("protocol", f"must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        for name, low in (("images", 1), ("steps", 1), ("batch_size", 1), ("eval_images", 0)):
            if getattr(self, name) < low:
                raise FieldError(name, f"must be >= {low}, got {getattr(self, name)!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise FieldError("learning_rate", f"must be > 0, got {self.learning_rate!r}")
        try:
            self.vision.validate()
        except FieldError as exc:
            raise FieldError(f"vision.{exc.field.split('.', 1)[-1]}", exc.message) from None


# ----------------------------------------------------------------------------- claims (pure)


def claim_questions(scene: Any, rng: random.Random) -> list[tuple[str, str]]:
    """(question, "yes" | "no") about `scene` in the claim splitter's wording: an object claim
    true and false, a position claim true and false (in that order). The false object is drawn
    half the time from every absent pair, half from those sharing a colour or a shape with a
    present object; the false position is another cell of a present object, or (half the time
    when a cell is free) the absent object at a free cell."""
    from rl.data.scenes import CELL_NAMES, COLOURS, SHAPES

    present = {(o.colour, o.shape) for o in scene.objects}
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    plausible = [(c, s) for c, s in absent if any(c == pc or s == ps for pc, ps in present)] or absent
    obj = rng.choice(scene.objects)
    colour, shape = rng.choice(plausible if rng.random() < 0.5 else absent)
    out = [(f"Is there a {obj.name}?", "yes"), (f"Is there a {colour} {shape}?", "no")]
    pos = rng.choice(scene.objects)
    out.append((f"Is the {pos.name} at the {pos.position}?", "yes"))
    empty = [name for cell, name in CELL_NAMES.items() if all(o.cell != cell for o in scene.objects)]
    if empty and rng.random() < 0.5:
        out.append((f"Is the {colour} {shape} at the {rng.choice(empty)}?", "no"))
    else:
        wrong = rng.choice([name for cell, name in CELL_NAMES.items() if cell != pos.cell])
        out.append((f"Is the {pos.name} at the {wrong}?", "no"))
    return out


def question_claim(question: str) -> Any:
    """The `Claim` the Shapes splitter makes of the statement behind a `claim_questions` question
    (found by its question text)."""
    from rewards.rlaifv.claims import parse_shapes_claims

    if question.startswith("Is there a "):
        statement = f"There is a {question[len('Is there a '):-1]}."
    else:
        name, _, where = question[len("Is the "):-1].partition(" at the ")
        statement = f"There is a {name} at the {where}."
    found = [c for c in parse_shapes_claims(statement) if c.question == question]
    if not found:
        raise ValueError(f"the claim splitter asks no {question!r} of {statement!r}")
    return found[0]


def balanced_items(rows: Any, limit: int) -> list[Any]:
    """`LabelItem`s of the `claim_questions` of up to `limit` distinct images of canonical `rows`
    (with scenes): half true, half false claims, fixed by the image order."""
    from rewards.rlaifv.labeler import LabelItem
    from rl.data.rows import row_images
    from rl.data.scenes import Scene

    items, seen = [], set()
    for row in rows:
        if len(seen) >= limit:
            break
        if row["image_id"] in seen or len(row["images"]) != 1 or not row.get("scene"):
            continue
        seen.add(row["image_id"])
        rng = random.Random(f"labeler-eval/{row['image_id']}")
        for question, _ in claim_questions(Scene.from_json(row["scene"]), rng):
            items.append(LabelItem(question_claim(question), row_images(row), row["scene"]))
    return items


# ----------------------------------------------------------------------------- training data


def yesno_rows(num_images: int, image_size: int, seed: int, avoid: set[tuple], suffix: str) -> Any:
    """Canonical rows (qtype `claim`) of the four `claim_questions` of `num_images` fresh scenes
    whose signature is not in `avoid`; each question ends with the labeler's `suffix`."""
    import datasets

    from rl.data.scenes import png_bytes, random_scene, render
    from rl.data.shapes import FEATURES

    rng = random.Random(f"labeler-yesno/{seed}")
    cols: dict[str, list[Any]] = {name: [] for name in FEATURES}
    made = 0
    while made < num_images:
        scene = random_scene(rng, image_size)
        if scene.signature() in avoid:
            continue
        image = [{"bytes": png_bytes(render(scene)), "path": None}]
        for j, (question, answer) in enumerate(claim_questions(scene, rng)):
            values = {"id": f"labeler-{made:05d}-{j}", "image_id": f"labeler-{made:05d}", "images": image, "videos": [],
                      "question": question + suffix, "prompt": [{"role": "user", "content": question + suffix}],
                      "task": "short", "qtype": "claim", "answer": answer, "reasoning": "", "objects": scene.names,
                      "scene": scene.to_json()}
            for name in FEATURES:
                cols[name].append(values[name])
        made += 1
    return datasets.Dataset.from_dict(cols, features=FEATURES)


def sft_examples(processor: Any, train: LabelerTraining, image_size: int, avoid: set[tuple], suffix: str) -> Any:
    """The labeler's fast-mode SFT examples (the warm-up's columns) for its protocol."""
    from rl.sft_data import build_sft_dataset

    if train.protocol == "describe":
        from rl.data.config import ShapesConfig
        from rl.data.shapes import description_rows

        rows = description_rows("labeler", train.images, ShapesConfig(seed=train.seed, image_size=image_size), avoid)
        return build_sft_dataset(processor, rows, mode_mix=0.0, hard_qtypes=[], seed=train.seed)
    rows = yesno_rows(train.images, image_size, train.seed, avoid, suffix)
    if not train.media_last:
        return build_sft_dataset(processor, rows, mode_mix=0.0, hard_qtypes=[], seed=train.seed)
    return _media_last_examples(processor, rows).shuffle(seed=train.seed)


def _media_last_examples(processor: Any, rows: Any) -> Any:
    """SFT examples of yes/no `rows` with the question before the image (`claim_messages`)."""
    import datasets

    from policies.chat import render_prompt
    from rewards.rlaifv.labeler import LABEL_MODE, claim_messages
    from rl.data.rows import undecoded_media
    from rl.sft_data import SFT_COLUMNS, eos_token_of, sft_features

    eos = eos_token_of(processor)
    images, _ = undecoded_media(rows)
    cols: dict[str, list[Any]] = {name: [] for name in SFT_COLUMNS}
    for row, media in zip(rows.select_columns(["id", "question", "answer"]).to_list(), images, strict=True):
        msgs = claim_messages(row["question"], [object()] * len(media), media_last=True)
        values = {"id": row["id"], "mode": LABEL_MODE, "task": "short", "qtype": "claim",
                  "prompt": render_prompt(processor, msgs, LABEL_MODE, len(media)), "completion": row["answer"] + eos,
                  "images": media, "videos": []}
        for name in SFT_COLUMNS:
            cols[name].append(values[name])
    return datasets.Dataset.from_dict(cols, features=sft_features())


# ----------------------------------------------------------------------------- the labeler


def make_trained_labeler(engine: Any, processor: Any, train: LabelerTraining, suffix: str, temperature: float,
                         source: str = "trained", max_tokens: int = 64, seed: int = 0) -> Any:
    """The `Labeler` of a trained labeler model served by `engine` (its protocol decides which)."""
    if train.protocol == "describe":
        from rewards.rlaifv.describe_labeler import DescribingLabeler

        return DescribingLabeler(engine, source=source, max_tokens=max_tokens, seed=seed)
    from rewards.rlaifv.labeler import ProbabilityLabeler

    return ProbabilityLabeler.from_processor(engine, processor, source=source, temperature=temperature,
                                             suffix=suffix, media_last=train.media_last)


def settings_key(train: LabelerTraining, family: str, tiny_size: str, image_size: int, suffix: str,
                 avoid: set[tuple]) -> str:
    """Content hash of everything that decides the trained labeler (its cache key)."""
    blob = json.dumps({"train": {k: v for k, v in asdict(train).items() if k != "cache_dir"}, "family": family,
                       "size": tiny_size, "image_size": image_size, "suffix": suffix if train.protocol == "yesno" else "",
                       "avoid": hashlib.sha256(repr(sorted(avoid)).encode()).hexdigest()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def ensure_labeler(ctx: Any) -> tuple[str, dict[str, Any]]:
    """(path, info) of the run's trained labeler: the cached folder when complete, else trained
    now (vision pretraining, SFT, save, balanced agreement on held-out claims)."""
    from rl.vision_pretrain import excluded_signatures

    cfg = ctx.cfg
    if cfg.data.source != "shapes":
        raise FieldError("rlaifv.labeler", f"'trained' learns from generated Shapes scenes; with data.source="
                         f"{cfg.data.source!r} use model:<path-or-name> (a VLM that answers yes/no)")
    train, rl = cfg.rlaifv.labeler_training, cfg.rlaifv
    image_size = cfg.data.shapes.image_size
    avoid = excluded_signatures(ctx.data.eval, ctx.data.train, getattr(ctx.data, "rl", None))
    key = settings_key(train, cfg.policy.family, cfg.policy.tiny_size, image_size, rl.labeler_suffix, avoid)
    folder = Path(train.cache_dir or ctx.out) / f"labeler-{key}"
    if (folder / INFO).exists():
        return str(folder), {**json.loads((folder / INFO).read_text()), "cached": True}
    return str(folder), {**train_labeler(ctx, train, folder, image_size, avoid), "cached": False}


def train_labeler(ctx: Any, train: LabelerTraining, folder: Path, image_size: int, avoid: set[tuple]) -> dict[str, Any]:
    """Build, pretrain, fine-tune, save and measure one labeler into `folder` (`INFO` last)."""
    import shutil
    from types import SimpleNamespace

    from policies.hf_engine import HFEngine
    from policies.loading import PolicyConfig, load_model, load_processor
    from policies.tiny import build_tiny_model
    from rewards.rlaifv.labeler import labeler_agreement, make_labeler
    from rl.stages.warmup import WarmupConfig
    from rl.stages.warmup import train as sft
    from rl.vision_pretrain import pretrain_vision

    cfg = ctx.cfg
    work = folder.with_name(folder.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    init = build_tiny_model(work / "init", seed=train.seed, size=cfg.policy.tiny_size, family=cfg.policy.family)
    model = load_model(str(init), PolicyConfig(**{**vars(cfg.policy), "name_or_path": str(init)}))
    processor = load_processor(str(init))
    vision = pretrain_vision(model, processor, train.vision, None, avoid, image_size=image_size, seed=train.seed)
    examples = sft_examples(processor, train, image_size, avoid, cfg.rlaifv.labeler_suffix)
    sft_cfg = WarmupConfig(steps=train.steps, batch_size=train.batch_size, learning_rate=train.learning_rate,
                           logging_steps=50)
    stats = sft(SimpleNamespace(out=work, cfg=SimpleNamespace(seed=train.seed)), sft_cfg, model, processor, examples)
    model.save_pretrained(work / "model")
    processor.save_pretrained(work / "model")
    info: dict[str, Any] = {"protocol": train.protocol, "examples": len(examples), "vision_pretrain": vision,
                            "sft": stats, "seconds": 0.0}
    if train.eval_images:
        items = balanced_items(ctx.data.eval, train.eval_images)
        engine = HFEngine(model.eval(), processor, {"fast": cfg.rlaifv.max_tokens, "deep": cfg.rlaifv.max_tokens})
        labeler = make_trained_labeler(engine, processor, train, cfg.rlaifv.labeler_suffix,
                                       cfg.rlaifv.labeler_temperature)
        info["heldout_agreement"] = labeler_agreement(labeler.label(items), make_labeler("oracle").label(items))
    info["seconds"] = time.perf_counter() - t0
    shutil.rmtree(folder, ignore_errors=True)
    shutil.move(str(work / "model"), str(folder))
    shutil.rmtree(work, ignore_errors=True)
    (folder / INFO).write_text(json.dumps(info, indent=2, default=str))
    return info


def main(argv: list[str] | None = None) -> None:
    """`python -m rl.train_labeler --config CONFIG [key=value ...]`: train (or find in its cache)
    the labeler a run of that config would use, and print its record (held-out agreement)."""
    import argparse
    from types import SimpleNamespace

    from rl.config import load_train_config
    from rl.data.loader import load_data

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    cfg = load_train_config(args.config, args.overrides)
    out = Path(cfg.output_dir)
    path, info = ensure_labeler(SimpleNamespace(cfg=cfg, out=out, data=load_data(cfg.data)))
    print(json.dumps({"path": path, **{k: v for k, v in info.items() if k != "sft"},
                      "sft_final_loss": info["sft"]["final_train_loss"]}, indent=2, default=str))


if __name__ == "__main__":
    main()
