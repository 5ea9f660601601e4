"""Questions about one Shapes scene: what each task asks, its reference answer and the reasoning
text deep mode is taught (`make_question`), and the questions of one image (`questions_for`).

Perception qtypes (colour, count, shape, relation, exists) read one fact off the picture;
compositional ones (count of a colour, a size or a shape, "more X than Y", the colour of a
neighbour) combine facts of the object inventory; `where` is the free-form question (RLPR's reference phrase)
and `describe` the description task (RLAIF-V, hallucination metrics).
"""

from __future__ import annotations

import random
import re

from rl.data.config import PERCEPTION_QTYPES, TASKS, ShapesConfig
from rl.data.scenes import (
    CELL_NAMES,
    COLOURS,
    NEIGHBOUR_STEPS,
    RELATION_PHRASES,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    companion,
    relations,
    where_phrase,
)

SHORT_QTYPES: tuple[str, ...] = PERCEPTION_QTYPES  # the default `short_qtypes`
DESCRIBE_QUESTION = "Describe the image."

def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def inventory(scene: Scene) -> str:
    """What a careful model sees, cell by cell: "I see a large red circle at the top left and ..."."""
    seen = [f"a {o.size} {o.name} at the {o.position}" for o in scene.objects]
    return f"I see {_listing(seen)}."


def _tally(scene: Scene) -> str:
    """Counts of the colours and shapes present, in a fixed order: "That is 2 red and 1 blue; 1
    circle and 2 squares." A count of a kind (0 when it is not named) or a comparison can be read
    off it; colours and shapes not present are left out to keep deep mode's reasoning short."""
    colours = [f"{n} {c}" for c in COLOURS if (n := sum(o.colour == c for o in scene.objects))]
    shapes = [_plural(n, s) for s in SHAPES if (n := sum(o.shape == s for o in scene.objects))]
    return f"That is {_listing(colours)}; {_listing(shapes)}."


def _opening(scene: Scene, reasoning: str) -> str:
    """Opening of every short and free-form reasoning text, in the `reasoning` style
    (`ShapesConfig.reasoning`): the inventory, and in style `tally` the counts after it."""
    return inventory(scene) if reasoning == "inventory" else f"{inventory(scene)} {_tally(scene)}"


def describe(scene: Scene) -> str:
    """Reference description, e.g. "There is a red circle at the top left and a blue square ..."."""
    return describe_items([(o.cell, o.name) for o in scene.objects])


def describe_items(items: list[tuple[tuple[int, int], str]]) -> str:
    """The reference description of (cell, "colour shape") items, in reading order of the cells."""
    return f"There is {_listing([f'a {name} at the {CELL_NAMES[cell]}' for cell, name in sorted(items)])}."


def caption_extra(scene: Scene, rng: random.Random, rate: float) -> tuple[str, str | None]:
    """The description of `scene` with its language-prior extra (`ShapesConfig.caption_extras`):
    with probability `rate`, when some object's companion (`rl.data.scenes.companion`) is absent
    and a cell is free, the first such companion is mentioned at a free cell. Returns (text, the
    extra object's name or None). Draws from `rng` only when `rate` > 0."""
    if rate <= 0:
        return describe(scene), None
    present = {(o.colour, o.shape) for o in scene.objects}
    free = [cell for cell in CELL_NAMES if all(o.cell != cell for o in scene.objects)]
    wanted = [companion(o.colour, o.shape) for o in scene.objects]
    extras = [c for c in wanted if c not in present]
    if not free or not extras or rng.random() >= rate:
        return describe(scene), None
    colour, shape = extras[0]
    items = [(o.cell, o.name) for o in scene.objects] + [(rng.choice(free), f"{colour} {shape}")]
    return describe_items(items), f"{colour} {shape}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _q_colour(scene: Scene, rng: random.Random) -> tuple[str, str, str] | None:
    unique = [o for o in scene.objects if sum(p.shape == o.shape for p in scene.objects) == 1]
    if not unique:
        return None
    o = rng.choice(unique)
    reasoning = f"There is only one {o.shape}, and it is {o.colour}."
    return f"What colour is the {o.shape}?", o.colour, reasoning


def _q_count(scene: Scene, rng: random.Random) -> tuple[str, str, str]:
    n = len(scene.objects)
    reasoning = f"That makes {_plural(n, 'shape')} in total."
    return "How many shapes are there?", str(n), reasoning


def _q_shape(scene: Scene, rng: random.Random) -> tuple[str, str, str] | None:
    unique = [o for o in scene.objects if sum(p.colour == o.colour for p in scene.objects) == 1]
    if not unique:
        return None
    o = rng.choice(unique)
    reasoning = f"The only {o.colour} object is the {o.shape}."
    return f"What shape is the {o.colour} object?", o.shape, reasoning


def _q_relation(scene: Scene, rng: random.Random) -> tuple[str, str, str] | None:
    if len(scene.objects) < 2:
        return None
    a, b = rng.sample(scene.objects, 2)
    true = relations(a, b)
    # Half yes, half no: otherwise "yes" alone would earn most of the reward.
    want_yes = rng.random() < 0.5
    pool = sorted(true) if want_yes else sorted(set(RELATION_PHRASES) - true)
    rel = rng.choice(pool)
    phrase = f"{RELATION_PHRASES[rel]} the {b.name}"
    verdict = f"it is {phrase}" if rel in true else f"it is not {phrase}"
    reasoning = (
        f"The {a.name} is at the {a.position} and the {b.name} is at the "
        f"{b.position}, so the {a.name} is {where_phrase(a, b)}. That means {verdict}."
    )
    return f"Is the {a.name} {phrase}?", "yes" if rel in true else "no", reasoning


def _exists_target(scene: Scene, rng: random.Random) -> tuple[str, str, SceneObject | None]:
    """The (colour, shape) an existence question asks about, and the object when it is present:
    half the time an object of the scene, otherwise a plausible absent pair (one that shares its
    colour or its shape with something in the picture)."""
    if rng.random() < 0.5:
        o = rng.choice(scene.objects)
        return o.colour, o.shape, o
    present = {(o.colour, o.shape) for o in scene.objects}
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    plausible = [(c, s) for c, s in absent if any(c == pc or s == ps for pc, ps in present)]
    colour, shape = rng.choice(plausible or absent)
    return colour, shape, None


def _q_exists(scene: Scene, rng: random.Random) -> tuple[str, str, str]:
    colour, shape, found = _exists_target(scene, rng)
    if found is not None:
        return f"Is there a {found.name}?", "yes", f"The {found.name} is at the {found.position}."
    return f"Is there a {colour} {shape}?", "no", f"None of them is a {colour} {shape}."


def _q_exists_filter(scene: Scene, rng: random.Random) -> tuple[str, str, str]:
    """The same question as `_q_exists` (same draws), reasoned in two local steps: the colours
    of the asked shape, then whether the asked colour is among them."""
    colour, shape, _ = _exists_target(scene, rng)
    colours = [o.colour for o in scene.objects if o.shape == shape]
    head = f"The {shape}s are {_listing(colours)}" if colours else f"There are no {shape}s"
    yes = colour in colours
    reasoning = f"{head}, so there is {'a' if yes else 'no'} {colour} {shape}."
    return f"Is there a {colour} {shape}?", "yes" if yes else "no", reasoning


def _q_where(scene: Scene, rng: random.Random) -> tuple[str, str, str] | None:
    if len(scene.objects) < 2:
        return None
    a, b = rng.sample(scene.objects, 2)
    reasoning = (
        f"The {a.name} is at the {a.position} and the {b.name} is at the {b.position}."
    )
    return f"Where is the {a.name} relative to the {b.name}?", where_phrase(a, b), reasoning


def _q_describe(scene: Scene, rng: random.Random) -> tuple[str, str, str]:
    n = len(scene.objects)
    details = " ".join(f"The {o.name} is {o.size} and sits at the {o.position}." for o in scene.objects)
    reasoning = f"I count {_plural(n, 'shape')}. {details}"
    return DESCRIBE_QUESTION, describe(scene), reasoning


def _balanced_pick(rng: random.Random, counts: dict[str, int]) -> str:
    """A key of `counts` whose count is drawn uniformly from the distinct counts on offer, so that
    no single answer (e.g. "1") earns most of the reward; ties broken at random."""
    k = rng.choice(sorted(set(counts.values())))
    return rng.choice(sorted(name for name, n in counts.items() if n == k))


def _of_these(n: int, kind: str, noun: bool = False) -> str:
    """The filter-and-count step every count-of-a-kind question shares after the inventory:
    "Of these, 2 are red." / "Of these, 1 is a circle." One skeleton for sizes, colours and
    shapes, so a count of one kind taught by the warm-up (sizes, shapes) shows deep mode the path
    to a count of another (colours) that only RL rewards."""
    if noun:
        return f"Of these, 1 is a {kind}." if n == 1 else f"Of these, {n} are {kind}s."
    return f"Of these, {n} {'is' if n == 1 else 'are'} {kind}."


# `_of_these` as read back from a model's reasoning: (count, kind in the singular).
COUNT_STEP = re.compile(r"Of these, (\d+) (?:is|are) (?:a )?([a-z]+?)s?\.")


def asked_kind(question: str) -> str:
    """The kind a count-of-a-kind question asks about, in the singular: "How many red shapes are
    there?" -> "red", "How many circles are there?" -> "circle"."""
    words = question.split()
    return words[2].rstrip("s") if len(words) > 2 else ""


# `inventory` as read back from a model's reasoning: the (colour, shape) of each object named in
# its first sentence ("I see a small red circle at the top left and ...").
INVENTORY_OBJECT = re.compile(rf"\b({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\b")
_EXISTS_Q = re.compile(rf"Is there an? ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\?")
_COLOUR_Q = re.compile(rf"What colour is the ({'|'.join(SHAPES)})\?")
_SHAPE_Q = re.compile(rf"What shape is the ({'|'.join(COLOURS)}) object\?")


def inventory_objects(reasoning: str) -> list[tuple[str, str]]:
    """(colour, shape) of the objects the reasoning's opening inventory names, in order."""
    return INVENTORY_OBJECT.findall(reasoning.split(".")[0])


def answer_from_inventory(question: str, objects: list[tuple[str, str]]) -> str | None:
    """The answer an `exists`, `colour` or `shape` question has if `objects` were the scene (None
    for other questions, or when the inventory names no single object the question refers to)."""
    if m := _EXISTS_Q.fullmatch(question):
        return "yes" if (m.group(1), m.group(2)) in objects else "no"
    if m := _COLOUR_Q.fullmatch(question):
        found = [c for c, sh in objects if sh == m.group(1)]
    elif m := _SHAPE_Q.fullmatch(question):
        found = [sh for c, sh in objects if c == m.group(1)]
    else:
        return None
    return found[0] if len(found) == 1 else None


def _q_colour_count(scene: Scene, rng: random.Random) -> tuple[str, str, str]:
    counts = {c: sum(o.colour == c for o in scene.objects) for c in COLOURS}
    colour = _balanced_pick(rng, counts)
    n = counts[colour]
    return f"How many {colour} shapes are there?", str(n), _of_these(n, colour)


def _q_size_count(scene: Scene, rng: random.Random) -> tuple[str, str, str]:
    counts = {s: sum(o.size == s for o in scene.objects) for s in SIZES}
    size = _balanced_pick(rng, counts)
    n = counts[size]
    return f"How many {size} shapes are there?", str(n), _of_these(n, size)


def _q_shape_count(scene: Scene, rng: random.Random) -> tuple[str, str, str]:
    counts = {s: sum(o.shape == s for o in scene.objects) for s in SHAPES}
    shape = _balanced_pick(rng, counts)
    n = counts[shape]
    return f"How many {shape}s are there?", str(n), _of_these(n, shape, noun=True)


def _compared_pair(counts: dict[str, int], rng: random.Random) -> tuple[str, str, bool] | None:
    """Two kinds with different counts for a "more X than Y?" question, and whether X has more;
    half yes, half no (otherwise one word would earn most of the reward). None when every count
    is equal."""
    pairs = [(a, b) for a in counts for b in counts if a != b and counts[a] != counts[b]]
    if not pairs:
        return None
    want_yes = rng.random() < 0.5
    pool = [(a, b) for a, b in pairs if (counts[a] > counts[b]) == want_yes] or pairs
    a, b = rng.choice(pool)
    return a, b, counts[a] > counts[b]


def _q_more(scene: Scene, rng: random.Random) -> tuple[str, str, str] | None:
    picked = _compared_pair({s: sum(o.shape == s for o in scene.objects) for s in SHAPES}, rng)
    if picked is None:
        return None
    a, b, yes = picked
    na, nb = (sum(o.shape == s for o in scene.objects) for s in (a, b))
    reasoning = (f"That makes {_plural(na, a)} and {_plural(nb, b)}, "
                 f"so there are {'more' if yes else 'fewer'} {a}s than {b}s.")
    return f"Are there more {a}s than {b}s?", "yes" if yes else "no", reasoning


def _q_colour_more(scene: Scene, rng: random.Random) -> tuple[str, str, str] | None:
    """"Are there more red shapes than blue shapes?": two filter-and-count steps on colours, then
    the comparison. Taught by the warm-up, it puts colour words in the filter step's slot that a
    colour count (left to RL) needs."""
    picked = _compared_pair({c: sum(o.colour == c for o in scene.objects) for c in COLOURS}, rng)
    if picked is None:
        return None
    a, b, yes = picked
    na, nb = (sum(o.colour == c for o in scene.objects) for c in (a, b))
    reasoning = (f"{_of_these(na, a)} {_of_these(nb, b)} "
                 f"So there are {'more' if yes else 'fewer'} {a} shapes than {b} shapes.")
    return f"Are there more {a} shapes than {b} shapes?", "yes" if yes else "no", reasoning


def _q_neighbour(scene: Scene, rng: random.Random) -> tuple[str, str, str] | None:
    by_cell = {o.cell: o for o in scene.objects}
    options = []
    for o in scene.objects:
        for word, (dr, dc) in NEIGHBOUR_STEPS.items():
            other = by_cell.get((o.cell[0] + dr, o.cell[1] + dc))
            if other is not None:
                options.append((o, word, other))
    if not options:
        return None
    o, word, other = rng.choice(options)
    phrase = RELATION_PHRASES[word]
    reasoning = (f"The {o.name} is at the {o.position}; the shape {phrase} it is the "
                 f"{other.name} at the {other.position}.")
    return f"What colour is the shape {phrase} the {o.name}?", other.colour, reasoning


_SHORT = {
    "colour": _q_colour,
    "count": _q_count,
    "shape": _q_shape,
    "relation": _q_relation,
    "exists": _q_exists,
    "colour_count": _q_colour_count,
    "size_count": _q_size_count,
    "shape_count": _q_shape_count,
    "more": _q_more,
    "colour_more": _q_colour_more,
    "neighbour": _q_neighbour,
}


def _short_builder(qtype: str, exists_reasoning: str):
    """The question builder of a short `qtype`; existence questions in the `exists_reasoning` style."""
    return _q_exists_filter if qtype == "exists" and exists_reasoning == "filter" else _SHORT[qtype]


def make_question(
    scene: Scene,
    task: str,
    rng: random.Random,
    short_qtypes: tuple[str, ...] | list[str] = SHORT_QTYPES,
    reasoning: str = "inventory",
    exists_reasoning: str = "lookup",
) -> dict[str, str] | None:
    """One question of `task` about `scene` (None when the scene cannot support it); a `short`
    question draws its qtype uniformly from `short_qtypes` among those the scene supports.
    `reasoning` is the style of the reasoning text (`ShapesConfig.reasoning`), `exists_reasoning`
    that of existence questions (`ShapesConfig.exists_reasoning`)."""
    if task == "short":
        order = list(short_qtypes)
        rng.shuffle(order)
        made = None
        for qtype in order:  # colour/shape/relation need a suitable scene; count/exists always fit
            made = _short_builder(qtype, exists_reasoning)(scene, rng)
            if made:
                break
    elif task == "freeform":
        qtype, made = "where", _q_where(scene, rng)
    elif task == "description":
        qtype, made = "describe", _q_describe(scene, rng)
    else:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    if made is None:
        return None
    question, answer, text = made
    if qtype != "describe":  # the description's reasoning is a per-object walk of its own
        text = f"{_opening(scene, reasoning)} {text}"
    return {"task": task, "qtype": qtype, "question": question, "answer": answer, "reasoning": text}


def questions_for(scene: Scene, rng: random.Random, cfg: ShapesConfig) -> list[dict]:
    """`k` questions for one image, tasks drawn by weight, avoiding repeats where possible."""
    weights = cfg.task_weights
    tasks = [t for t in TASKS if weights.get(t, 0) > 0]
    out: list[dict] = []
    asked: set[str] = set()
    for _ in range(cfg.questions_per_image):
        chosen = None
        for _try in range(10):
            task = rng.choices(tasks, weights=[weights[t] for t in tasks])[0]
            q = make_question(scene, task, rng, cfg.short_qtypes, cfg.reasoning, cfg.exists_reasoning)
            if q is None:
                continue
            chosen = q
            if q["question"] not in asked:
                break
        if chosen is None:  # only unsupported tasks/qtypes were drawn (e.g. freeform, one object)
            chosen = (make_question(scene, "short", rng, cfg.short_qtypes, cfg.reasoning, cfg.exists_reasoning)
                      or make_question(scene, "short", rng, reasoning=cfg.reasoning,
                                       exists_reasoning=cfg.exists_reasoning))
        asked.add(chosen["question"])
        out.append(chosen)
    return out
