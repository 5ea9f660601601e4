"""Tests of the embedded Shapes dataset: answers recomputed from the scene, pixels, splits,
determinism, parquet round trip and the config checks."""

from __future__ import annotations

import io
import json
import re

import datasets
import pytest
from PIL import Image

import rl.data.shapes as shapes_mod
from rl.configlib import ConfigError, FieldError, from_dict
from rl.data.config import ShapesConfig
from rl.data.scenes import COLOUR_RGB, SYNONYMS, Scene, render
from rl.data.shapes import FEATURES, corpus_text, load_parquet, make_shapes, save_parquet

CANONICAL_COLUMNS = [
    "id",
    "image_id",
    "images",
    "videos",
    "question",
    "prompt",
    "task",
    "qtype",
    "answer",
    "reasoning",
    "objects",
    "scene",
]
POSITIONS = {(0, 0): "top left", (0, 1): "top right", (1, 0): "bottom left", (1, 1): "bottom right"}


@pytest.fixture(scope="module")
def shapes() -> datasets.DatasetDict:
    return make_shapes(num_train_images=30, num_heldout_images=12, questions_per_image=3, seed=1)


def _raw(ds: datasets.Dataset) -> datasets.Dataset:
    """The dataset with images as {"bytes", "path"} instead of PIL images."""
    return ds.cast_column("images", datasets.List(datasets.Image(decode=False)))


def _objects(scene_json: str) -> list[dict]:
    return json.loads(scene_json)["objects"]


def _name(o: dict) -> str:
    return f"{o['colour']} {o['shape']}"


def _by_name(objects: list[dict], name: str) -> dict:
    (found,) = [o for o in objects if _name(o) == name]
    return found


def _holds(a: dict, rel: str, b: dict) -> bool:
    (ra, ca), (rb, cb) = a["cell"], b["cell"]
    return {"to the left of": ca < cb, "to the right of": ca > cb, "above": ra < rb, "below": ra > rb}[rel]


def _expected_answer(row: dict) -> str:
    """Recompute the answer from the scene JSON alone (independent of the generator)."""
    objs, q = _objects(row["scene"]), row["question"]
    qtype = row["qtype"]
    if qtype == "colour":
        shape = re.fullmatch(r"What colour is the (\w+)\?", q)[1]
        (match,) = [o for o in objs if o["shape"] == shape]  # the shape must be unique
        return match["colour"]
    if qtype == "count":
        assert q == "How many shapes are there?"
        return str(len(objs))
    if qtype == "shape":
        colour = re.fullmatch(r"What shape is the (\w+) object\?", q)[1]
        (match,) = [o for o in objs if o["colour"] == colour]
        return match["shape"]
    if qtype == "relation":
        m = re.fullmatch(r"Is the (\w+ \w+) (to the left of|to the right of|above|below) the (\w+ \w+)\?", q)
        return "yes" if _holds(_by_name(objs, m[1]), m[2], _by_name(objs, m[3])) else "no"
    if qtype == "exists":
        name = re.fullmatch(r"Is there a (\w+ \w+)\?", q)[1]
        return "yes" if name in [_name(o) for o in objs] else "no"
    if qtype == "where":
        m = re.fullmatch(r"Where is the (\w+ \w+) relative to the (\w+ \w+)\?", q)
        a, b = _by_name(objs, m[1]), _by_name(objs, m[2])
        parts = [r for r in ("above", "below", "to the left of", "to the right of") if _holds(a, r, b)]
        return f"{' and '.join(parts)} the {m[2]}"
    if qtype == "describe":
        assert q == "Describe the image."
        phrases = [f"a {_name(o)} at the {POSITIONS[tuple(o['cell'])]}" for o in objs]
        body = phrases[0] if len(phrases) == 1 else f"{', '.join(phrases[:-1])} and {phrases[-1]}"
        return f"There is {body}."
    raise AssertionError(f"unexpected qtype {qtype}")


def test_schema_and_columns(shapes):
    for split in ("train", "heldout"):
        ds = shapes[split]
        assert ds.column_names == CANONICAL_COLUMNS
        assert ds.features == FEATURES
        assert len(set(ds["id"])) == len(ds)
    train = shapes["train"]
    assert len(train) == 30 * 3 and len(shapes["heldout"]) == 12 * 3
    assert set(train["task"]) == {"short", "freeform", "description"}
    assert set(train["qtype"]) == {"colour", "count", "shape", "relation", "exists", "where", "describe"}
    for row in train.remove_columns(["images", "videos"]):
        assert row["prompt"] == [{"role": "user", "content": row["question"]}]
        assert row["reasoning"] and "<think>" not in row["reasoning"] and "</think>" not in row["reasoning"]
        task_of = {"where": "freeform", "describe": "description"}
        assert row["task"] == task_of.get(row["qtype"], "short")


def test_answers_agree_with_scene(shapes):
    checked = set()
    for split in ("train", "heldout"):
        for row in shapes[split].remove_columns(["images", "videos"]):
            assert row["answer"] == _expected_answer(row), row
            assert row["objects"] == [_name(o) for o in _objects(row["scene"])]
            checked.add(row["qtype"])
    assert len(checked) == 7


def test_exists_and_relation_answers_are_balanced(shapes):
    rows = [
        r
        for r in make_shapes(80, 0, 3, seed=3)["train"].remove_columns(["images", "videos"])
        if r["qtype"] in ("exists", "relation")
    ]
    answers = [r["answer"] for r in rows]
    assert len(answers) > 30
    assert 0.25 < answers.count("no") / len(answers) < 0.75


def test_scene_constraints(shapes):
    for row in shapes["train"].remove_columns(["images", "videos"]):
        scene = json.loads(row["scene"])
        objs = scene["objects"]
        assert 1 <= len(objs) <= 4
        assert len({tuple(o["cell"]) for o in objs}) == len(objs)
        assert len({(o["colour"], o["shape"]) for o in objs}) == len(objs)
        half = scene["image_size"] // 2
        for o in objs:
            x0, y0, x1, y1 = o["box"]
            row_, col = o["cell"]
            assert col * half <= x0 < x1 < (col + 1) * half
            assert row_ * half <= y0 < y1 < (row_ + 1) * half


def test_pixels_match_object_colours(shapes):
    seen = {}
    for row in shapes["train"].select_columns(["image_id", "images", "scene"]):
        seen.setdefault(row["image_id"], row)
    for row in seen.values():
        img = row["images"][0].convert("RGB")
        assert img.size == (64, 64)
        for o in _objects(row["scene"]):
            x0, y0, x1, y1 = o["box"]
            assert img.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)) == COLOUR_RGB[o["colour"]]
        assert img.getpixel((0, 0)) not in COLOUR_RGB.values()  # background at the corner


def test_render_rescales():
    row = make_shapes(3, 0, 1, seed=5)["train"][0]
    scene = Scene.from_json(row["scene"])
    big = render(scene, image_size=128)
    assert big.size == (128, 128)
    for o in scene.objects:
        cx, cy = o.centre
        assert big.getpixel((2 * cx, 2 * cy)) == COLOUR_RGB[o.colour]


def test_splits_never_share_an_image(monkeypatch):
    # Enough train images that single-object scenes collide with held-out ones and get redrawn
    # (held-out scenes are drawn first and never redrawn); the spy proves the redraw path ran.
    redraws = []
    image_rng = shapes_mod._image_rng

    def spy(seed, split, index, attempt):
        if attempt:
            redraws.append((split, index))
        return image_rng(seed, split, index, attempt)

    monkeypatch.setattr(shapes_mod, "_image_rng", spy)
    dd = make_shapes(num_train_images=250, num_heldout_images=60, questions_per_image=1, seed=2)
    assert redraws and all(split == "train" for split, _ in redraws)

    def signatures(ds):
        return {
            tuple(sorted((tuple(o["cell"]), o["colour"], o["shape"], o["size"]) for o in _objects(s)))
            for s in ds["scene"]
        }

    def image_bytes(ds):
        return {imgs[0]["bytes"] for imgs in _raw(ds)["images"]}

    assert not signatures(dd["train"]) & signatures(dd["heldout"])
    assert not image_bytes(dd["train"]) & image_bytes(dd["heldout"])
    assert not set(dd["train"]["image_id"]) & set(dd["heldout"]["image_id"])


def test_deterministic_and_seed_dependent():
    a = make_shapes(12, 4, 2, seed=7)
    b = make_shapes(12, 4, 2, seed=7)
    c = make_shapes(12, 4, 2, seed=8)
    for split in ("train", "heldout"):
        assert a[split].data.table.equals(b[split].data.table)
        assert not a[split].data.table.equals(c[split].data.table)
    assert _raw(a["train"])["images"] == _raw(b["train"])["images"]
    assert _raw(a["train"])["images"] != _raw(c["train"])["images"]


def test_parquet_round_trip(shapes, tmp_path):
    paths = save_parquet(shapes, tmp_path)
    assert sorted(p.name for p in paths) == ["heldout.parquet", "train.parquet"]
    back = load_parquet(tmp_path)
    assert list(back) == ["train", "heldout"]
    for split in ("train", "heldout"):
        assert back[split].features == FEATURES
        assert back[split].data.table.equals(shapes[split].data.table)
    img = back["train"][0]["images"][0]
    assert isinstance(img, Image.Image) and img.mode == "RGB"


def test_freeform_only_weights_give_multi_object_scenes():
    ds = make_shapes(15, 0, 2, seed=4, task_weights={"freeform": 1.0})["train"]
    assert set(ds["task"]) == {"freeform"}
    assert all(len(_objects(s)) >= 2 for s in ds["scene"])


def test_corpus_text():
    texts = corpus_text(n=200)
    for word in ["yes", "no", "Yes", "No", "7", "violet", "ball", "How many shapes are there?"]:
        assert word in texts
    assert any(t.startswith("There is a ") for t in texts)
    assert any(t.startswith("I see ") for t in texts)
    assert not any("<think>" in t or "</think>" in t for t in texts)
    assert corpus_text(n=200) == texts


def test_synonyms_cover_vocabulary():
    from rl.data.scenes import COLOURS, SHAPES

    assert set(SYNONYMS) == set(SHAPES) | set(COLOURS)
    assert all(SYNONYMS[w][0] == w for w in SYNONYMS)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"num_train_images": -1}, "num_train_images"),
        ({"questions_per_image": 0}, "questions_per_image"),
        ({"image_size": 8}, "image_size"),
        ({"task_weights": {"short": 1.0, "essay": 1.0}}, "task_weights"),
        ({"task_weights": {"short": -1.0}}, "task_weights.short"),
        ({"task_weights": {"short": 0.0}}, "task_weights"),
        ({"short_qtypes": []}, "short_qtypes"),
        ({"short_qtypes": ["colour", "parity"]}, "short_qtypes[1]"),
        ({"num_rl_images": -2}, "num_rl_images"),
        ({"reasoning": "essay"}, "reasoning"),
    ],
)
def test_shapes_config_validation(kwargs, field):
    with pytest.raises(FieldError) as err:
        ShapesConfig(**kwargs).validate()
    assert err.value.field == field
    with pytest.raises(ConfigError, match=re.escape(f"'shapes.{field}'")):
        from_dict(ShapesConfig, kwargs, prefix="shapes.")
    with pytest.raises(ValueError):
        make_shapes(**{**ShapesConfig().__dict__, **kwargs})


def test_shapes_config_defaults_valid():
    cfg = ShapesConfig()
    cfg.validate()
    assert (cfg.num_train_images, cfg.num_heldout_images, cfg.questions_per_image) == (600, 100, 2)
    assert cfg.task_weights == {"short": 0.6, "freeform": 0.2, "description": 0.2}
    decoded = Image.open(io.BytesIO(_raw(make_shapes(2, 0, 1)["train"])[0]["images"][0]["bytes"]))
    assert decoded.format == "PNG"


def test_heldout_split_does_not_depend_on_train_or_rl_sizes():
    a = make_shapes(20, 10, 2, seed=3)["heldout"]
    b = make_shapes(200, 10, 2, seed=3, num_rl_images=50)["heldout"]
    assert a.data.table.equals(b.data.table)


def test_rl_split_is_fresh_scenes_apart_from_train_and_heldout():
    dd = make_shapes(120, 30, 1, seed=2, num_rl_images=60)
    assert list(dd) == ["train", "heldout", "rl"] and len(dd["rl"]) == 60

    def sigs(ds):
        return {tuple(sorted((tuple(o["cell"]), o["colour"], o["shape"], o["size"]) for o in _objects(s)))
                for s in ds["scene"]}

    assert not sigs(dd["rl"]) & (sigs(dd["train"]) | sigs(dd["heldout"]))
    assert "rl" not in make_shapes(10, 2, 1, seed=2)


@pytest.mark.parametrize("qtype", ["colour_count", "size_count", "shape_count", "more", "colour_more", "neighbour"])
def test_compositional_answers_follow_from_the_scene(qtype):
    from rl.data.scenes import NEIGHBOUR_STEPS, RELATION_PHRASES

    ds = make_shapes(60, 0, 2, seed=6, task_weights={"short": 1.0}, short_qtypes=[qtype])["train"]
    # a scene that supports no question of the type falls back to a perception question
    assert ds["qtype"].count(qtype) > 0.6 * len(ds)
    ds = ds.filter(lambda q: q == qtype, input_columns="qtype")
    for row in ds:
        objs = _objects(row["scene"])
        q, a = row["question"], row["answer"]
        if qtype == "colour_count":
            colour = q.split()[2]
            assert a == str(sum(o["colour"] == colour for o in objs))
        elif qtype == "size_count":
            size = q.split()[2]
            assert a == str(sum(o["size"] == size for o in objs))
        elif qtype == "shape_count":
            shape = q.split()[2].rstrip("s")
            assert a == str(sum(o["shape"] == shape for o in objs))
        elif qtype == "more":
            x, y = q.split()[3].rstrip("s"), q.split()[5].rstrip("s?")
            nx, ny = (sum(o["shape"] == s for o in objs) for s in (x, y))
            assert nx != ny and a == ("yes" if nx > ny else "no")
        elif qtype == "colour_more":  # "Are there more red shapes than blue shapes?"
            x, y = q.split()[3], q.split()[6]
            nx, ny = (sum(o["colour"] == c for o in objs) for c in (x, y))
            assert nx != ny and a == ("yes" if nx > ny else "no")
            from rl.data.shapes_questions import COUNT_STEP  # both counts, in the filter step's words

            assert [m.groups() for m in COUNT_STEP.finditer(row["reasoning"])] == [(str(nx), x), (str(ny), y)]
        else:
            word = next(w for w, p in RELATION_PHRASES.items() if f"shape {p} the " in q)
            name = q.split(f"shape {RELATION_PHRASES[word]} the ")[1].rstrip("?")
            ref = next(o for o in objs if f"{o['colour']} {o['shape']}" == name)
            dr, dc = NEIGHBOUR_STEPS[word]
            other = next(o for o in objs if tuple(o["cell"]) == (ref["cell"][0] + dr, ref["cell"][1] + dc))
            assert a == other["colour"]
        assert row["reasoning"].startswith("I see ")
        if qtype.endswith("_count"):  # one filter-and-count step for every kind: "Of these, 2 are red."
            kind = q.split()[2].rstrip("s")
            assert re.search(rf"Of these, ({a} are {kind}s?|1 is (a )?{kind})\.$", row["reasoning"]), row["reasoning"]
            from rl.data.shapes_questions import COUNT_STEP, asked_kind  # the diagnostics' reading of it

            assert COUNT_STEP.search(row["reasoning"]).groups() == (a, asked_kind(q)) == (a, kind)
    if qtype in ("more", "colour_more"):  # balanced: one word cannot earn most of the reward
        assert 0.3 < ds["answer"].count("yes") / len(ds) < 0.7


def test_tally_reasoning_states_the_counts_the_compositional_answers_need():
    from rl.data.scenes import COLOURS, SHAPES

    kinds = ["colour_count", "shape_count", "more", "count", "colour", "relation"]
    tally = make_shapes(40, 0, 2, seed=5, task_weights={"short": 1.0}, short_qtypes=kinds, reasoning="tally")["train"]
    plain = make_shapes(40, 0, 2, seed=5, task_weights={"short": 1.0}, short_qtypes=kinds)["train"]
    # same questions and answers; only the reasoning text differs
    assert tally["question"] == plain["question"] and tally["answer"] == plain["answer"]
    for row, base in zip(tally, plain, strict=True):
        objs = _objects(row["scene"])
        inventory = base["reasoning"].split(". ")[0] + "."
        assert row["reasoning"].startswith(inventory + " That is ") and "That is" not in base["reasoning"]
        counts = row["reasoning"][len(inventory) + len(" That is "):].split(".")[0]
        said = {w.rstrip("s"): int(n) for n, w in re.findall(r"(\d+) (\w+)", counts)}
        truth = {k: sum(o["colour"] == k or o["shape"] == k for o in objs) for k in COLOURS + SHAPES}
        # every colour and shape present is counted; an absent one is left out (reads as 0)
        assert said == {k: n for k, n in truth.items() if n}
        if row["qtype"] == "colour_count":
            assert said.get(row["question"].split()[2], 0) == int(row["answer"])


def test_compare_and_motion_rows_hold_two_images_or_a_clip_whose_answer_the_pixels_show():
    """The multi-image task's answer is the image with more of the shape (by the scenes), the video
    task's clip has the configured frames and fps and its frames differ where the object moves."""
    import json

    from rl.data.shapes_media import compare_row, motion_row

    answers = []
    for i in range(12):
        row = compare_row(0, "train", i, 64)
        assert len(row["images"]) == 2 and row["videos"] == [] and row["qtype"] == "compare"
        scenes = json.loads(row["scene"])["images"]
        shape = row["question"].split("more ")[1].split("s,")[0]
        counts = [sum(o["shape"] == shape for o in s["objects"]) for s in scenes]
        assert row["answer"] == ("first" if counts[0] > counts[1] else "second") and counts[0] != counts[1]
        answers.append(row["answer"])
    assert set(answers) == {"first", "second"}
    for i in range(6):
        row = motion_row(0, "train", i, 56, num_frames=4, fps=2.0)
        assert row["images"] == [] and len(row["videos"]) == 1 and row["qtype"] == "motion"
        clip = row["videos"][0]
        assert len(clip["frames"]) == 4 and clip["fps"] == 2.0 and row["answer"] in {"left", "right", "up", "down"}
        assert clip["frames"][0] != clip["frames"][-1]  # the object moved
    assert motion_row(0, "train", 3, 56, 4, 2.0) == motion_row(0, "train", 3, 56, 4, 2.0)  # deterministic


def test_exists_filter_reasoning_asks_the_same_and_reads_off_its_answer():
    """`exists_reasoning=filter` keeps every question and answer of the default and reasons in two
    steps whose conclusion is the answer: the colours of the asked shape, then the asked colour."""
    lookup = make_shapes(num_train_images=40, num_heldout_images=10, seed=4)
    filtered = make_shapes(num_train_images=40, num_heldout_images=10, seed=4, exists_reasoning="filter")
    seen = 0
    for split in ("train", "heldout"):
        for a, b in zip(lookup[split], filtered[split], strict=True):
            assert (a["question"], a["answer"], a["qtype"]) == (b["question"], b["answer"], b["qtype"])
            if a["qtype"] != "exists":
                assert a["reasoning"] == b["reasoning"]
                continue
            seen += 1
            colour, shape = re.fullmatch(r"Is there a (\w+) (\w+)\?", b["question"]).groups()
            colours = [name.split()[0] for name in b["objects"] if name.split()[1] == shape]
            step = b["reasoning"].split(". ", 1)[1]
            assert step.startswith(f"The {shape}s are" if colours else f"There are no {shape}s")
            assert all(c in step for c in colours)
            verdict = "a" if b["answer"] == "yes" else "no"
            assert step.endswith(f", so there is {verdict} {colour} {shape}.")
    assert seen >= 5


def test_caption_extras_put_a_companion_into_train_descriptions_only():
    from rewards.rlaifv.hallucination import response_hallucination
    from rl.data.scenes import companion

    clean = make_shapes(num_train_images=200, num_heldout_images=30, seed=3)
    noisy = make_shapes(num_train_images=200, num_heldout_images=30, seed=3, caption_extras=1.0)
    assert noisy["heldout"]["answer"] == clean["heldout"]["answer"]  # held-out references stay clean
    changed = 0
    for a, b in zip(clean["train"], noisy["train"], strict=True):
        assert a["question"] == b["question"] and a["objects"] == b["objects"]  # the other draws are as before
        if a["task"] != "description" or a["answer"] == b["answer"]:
            continue
        changed += 1
        extra = response_hallucination(b["answer"], b["objects"]).hallucinated
        scene = Scene.from_json(b["scene"])
        assert len(extra) == 1 and extra[0] in {" ".join(companion(o.colour, o.shape)) for o in scene.objects}
        assert len(scene.objects) < 4  # only into a free cell
    described = sum(t == "description" for t in clean["train"]["task"])
    assert 0.5 * described < changed < described


def test_description_rows_are_fresh_scenes_apart_from_the_ones_to_avoid():
    from rl.data.shapes import description_rows

    cfg = ShapesConfig(seed=0)
    first = description_rows("rlaifv-0-0", 20, cfg, set())
    avoid = {Scene.from_json(s).signature() for s in first["scene"][:10]}
    again = description_rows("rlaifv-0-0", 20, cfg, avoid)
    assert not avoid & {Scene.from_json(s).signature() for s in again["scene"]}
    assert again["scene"][10:] == first["scene"][10:]  # one stream per index: the rest unchanged
    assert set(first["task"]) == {"description"} and set(first["question"]) == {"Describe the image."}
    other = description_rows("rlaifv-0-1", 20, cfg, set())
    assert other["scene"] != first["scene"]
