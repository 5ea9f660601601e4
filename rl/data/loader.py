"""User data loader: turns `data.source` into train/eval datasets in the canonical schema.

Sources: `"shapes"` (the embedded generator), a local .parquet / .jsonl / .json file or a folder
of them, or a Hugging Face hub dataset name. User columns are mapped onto the canonical schema
(`rl.data.shapes.FEATURES`) through `data.columns`; every image is opened and verified here, so
a corrupt file fails at start with its file, row and column named, not deep inside training.
With `data.on_bad_row: skip` bad rows are dropped and counted instead (missing columns are
always fatal: they mean the column mapping is wrong, not that a row is).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq

from rl.data.config import TASKS, ColumnMap, DataConfig
from rl.data.media_io import BadRow, MediaReader
from rl.data.shapes import FEATURES, empty_dataset, make_shapes

logger = logging.getLogger(__name__)

DATA_SUFFIXES = (".parquet", ".jsonl", ".json")
# Suffixes that mark a source string as a local path even when nothing exists there, so a
# typo'd file name fails with "does not exist" instead of a confusing hub lookup.
_FILE_LIKE_SUFFIXES = DATA_SUFFIXES + (".csv", ".tsv", ".arrow", ".txt", ".zip", ".gz", ".tar")
# LLaVA-style data puts an image placeholder in the text; the chat renderer adds its own.
_IMAGE_TOKEN = re.compile(r"<image>\s*")
_ROW_HINT = "Fix that row, or set data.on_bad_row=skip to drop such rows."


class DataError(ValueError):
    """Bad input data; the message names the file, row and column, and what to do."""


@dataclass
class LoadedData:
    """Train and eval datasets in the canonical schema, plus skipped-row counts by reason."""

    train: datasets.Dataset
    eval: datasets.Dataset
    skipped: dict[str, int] = field(default_factory=dict)
    # Prompts reserved for the RL stage (the Shapes `rl` split: fresh scenes); None = use `train`.
    rl: datasets.Dataset | None = None


@dataclass
class _Source:
    """One file (or hub split) of rows."""

    label: str  # file path or "name[split]", used in messages
    columns: list[str]
    rows: Callable[[], Iterator[dict[str, Any]]]
    base_dir: Path  # relative image paths resolve here unless data.image_root is set


# ----------------------------------------------------------------------------- entry point


def load_data(cfg: DataConfig) -> LoadedData:
    """Load `cfg.source` into canonical train/eval datasets (see the module docstring)."""
    if cfg.source == "shapes":
        return _load_shapes(cfg)
    train_sources, eval_sources = _resolve_sources(cfg)
    skipped: Counter[str] = Counter()
    reader = MediaReader(Path(cfg.image_root).expanduser() if cfg.image_root else None, cfg.video_frames,
                         cfg.video_fps)
    train = _build_split(cfg, "train", train_sources, cfg.max_train, reader, skipped)
    if eval_sources:
        evals = _build_split(cfg, "eval", eval_sources, cfg.max_eval, reader, skipped)
    else:
        evals = empty_dataset()
    if skipped:
        detail = ", ".join(f"{reason}: {n}" for reason, n in sorted(skipped.items()))
        logger.warning(
            "data: skipped %d bad rows of %s (%s); data.on_bad_row=error shows the first one",
            sum(skipped.values()),
            cfg.source,
            detail,
        )
    logger.info("data: %d train rows, %d eval rows from %s", len(train), len(evals), cfg.source)
    return LoadedData(train=train, eval=evals, skipped=dict(skipped))


def _load_shapes(cfg: DataConfig) -> LoadedData:
    dd = make_shapes(**asdict(cfg.shapes))

    def pick(split: str, limit: int | None) -> datasets.Dataset:
        if split not in dd:
            raise DataError(
                f"the shapes dataset has splits {', '.join(dd)}, not '{split}'; "
                "set data.train_split / data.eval_split accordingly"
            )
        ds = dd[split]
        return ds.select(range(min(limit, len(ds)))) if limit is not None else ds

    evals = pick(cfg.eval_split, cfg.max_eval) if cfg.eval_split else empty_dataset()
    return LoadedData(train=pick(cfg.train_split, cfg.max_train), eval=evals, skipped={}, rl=dd.get("rl"))


# ----------------------------------------------------------------------------- finding the rows


def _looks_local(source: str) -> bool:
    # Hub names are "name" or "owner/name"; anything more path-like is meant as a local path.
    return (
        Path(source).suffix.lower() in _FILE_LIKE_SUFFIXES
        or source.startswith(("/", ".", "~"))
        or "\\" in source
        or source.count("/") > 1
    )


def _resolve_sources(cfg: DataConfig) -> tuple[list[_Source], list[_Source]]:
    path = Path(cfg.source).expanduser()
    if path.is_file():
        if cfg.eval_split:
            logger.warning(
                "data: source %s is a single file, used as the train split; there is no eval "
                "split (give a folder with %s.* and %s.* files to have one)",
                path,
                cfg.train_split,
                cfg.eval_split,
            )
        return [_file_source(path)], []
    if path.is_dir():
        return _folder_sources(path, cfg)
    if _looks_local(cfg.source):
        raise DataError(
            f"data source {cfg.source} does not exist (looked for {path.resolve()}). Set "
            "data.source to an existing .parquet/.jsonl/.json file or folder, to 'shapes', "
            "or to a Hugging Face hub dataset name."
        )
    return _hub_sources(cfg)


def _file_source(path: Path) -> _Source:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise DataError(f"{path}: not a readable parquet file ({exc})") from None

        def rows() -> Iterator[dict[str, Any]]:
            for batch in pf.iter_batches(batch_size=256):
                yield from batch.to_pylist()

        return _Source(str(path), list(pf.schema_arrow.names), rows, path.parent)
    if suffix in (".jsonl", ".json"):
        records = _read_json_records(path)
        columns = list(dict.fromkeys(key for record in records for key in record))
        return _Source(str(path), columns, lambda: iter(records), path.parent)
    raise DataError(f"{path}: unsupported file type '{path.suffix}'; use {', '.join(DATA_SUFFIXES)} files")


def _read_json_records(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON array file, a {"<key>": [rows]} file, or a JSON-lines file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the file as UTF-8 text ({exc})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # `datasets` writes JSON lines even to .json files: try that below
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            data = lists[0] if len(lists) == 1 else data
        if data is not None:
            if not isinstance(data, list):
                raise DataError(
                    f"{path}: expected a JSON list of row objects (or JSON lines), "
                    f"got a {type(data).__name__}"
                )
            for i, record in enumerate(data):
                if not isinstance(record, dict):
                    raise DataError(f"{path}: row {i} is not a JSON object: {record!r:.80}")
            return data
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}: line {lineno} is not valid JSON ({exc.msg}); each line of a JSON-lines "
                "file must hold one JSON object"
            ) from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {lineno} is not a JSON object: {record!r:.80}")
        records.append(record)
    return records


def _split_files(files: list[Path], split: str) -> list[Path]:
    # Accept "train.jsonl", "train-00000-of-00002.parquet", "train_part1.json", "train/x.parquet".
    return [
        p
        for p in files
        if p.stem == split or p.stem.startswith((f"{split}-", f"{split}_")) or p.parent.name == split
    ]


def _folder_sources(folder: Path, cfg: DataConfig) -> tuple[list[_Source], list[_Source]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
    train = _split_files(files, cfg.train_split)
    if not train:
        found = ", ".join(str(p.relative_to(folder)) for p in files) or "none"
        raise DataError(
            f"{folder}: no data file for split '{cfg.train_split}' (expected e.g. "
            f"{cfg.train_split}.parquet, {cfg.train_split}.jsonl or "
            f"{cfg.train_split}-00000-of-00001.parquet); data files found: {found}. "
            "Rename the files or set data.train_split."
        )
    evals = _split_files(files, cfg.eval_split) if cfg.eval_split else []
    if cfg.eval_split and not evals:
        logger.warning("data: %s has no '%s' files; there is no eval split", folder, cfg.eval_split)
    return [_file_source(p) for p in train], [_file_source(p) for p in evals]


def _hub_sources(cfg: DataConfig) -> tuple[list[_Source], list[_Source]]:
    try:
        dd = datasets.load_dataset(cfg.source)
    except Exception as exc:  # network, auth, missing repo: all mean "cannot use this source"
        raise DataError(
            f"data source '{cfg.source}' is not a local file or folder, and loading it as a "
            f"Hugging Face hub dataset failed ({type(exc).__name__}: {exc}). Set data.source to "
            "'shapes', an existing .parquet/.jsonl/.json file or folder, or a hub dataset name."
        ) from None
    if cfg.train_split not in dd:
        raise DataError(
            f"hub dataset '{cfg.source}' has splits {', '.join(dd)}, not '{cfg.train_split}'; "
            "set data.train_split (and data.eval_split)"
        )

    def source(split: str) -> _Source:
        ds = dd[split]
        # Keep the original encoded bytes instead of decoding to PIL and re-encoding.
        feature = ds.features.get(cfg.columns.image)
        if isinstance(feature, datasets.Image):
            ds = ds.cast_column(cfg.columns.image, datasets.Image(decode=False))
        elif isinstance(feature, datasets.List) and isinstance(feature.feature, datasets.Image):
            ds = ds.cast_column(cfg.columns.image, datasets.List(datasets.Image(decode=False)))
        return _Source(f"{cfg.source}[{split}]", list(ds.column_names), lambda: iter(ds), Path.cwd())

    evals = [source(cfg.eval_split)] if cfg.eval_split in dd else []
    if cfg.eval_split and not evals:
        logger.warning("data: hub dataset %s has no split '%s'; no eval split", cfg.source, cfg.eval_split)
    return [source(cfg.train_split)], evals


# ----------------------------------------------------------------------------- rows -> schema


def _column_plan(cm: ColumnMap, src: _Source) -> dict[str, str | None]:
    """Canonical field -> user column (None = absent); raises DataError for a missing column."""
    present = set(src.columns)

    def need(name: str, column: str) -> str:
        if column not in present:
            listed = ", ".join(src.columns) or "none (the data has no rows)"
            raise DataError(
                f"{src.label}: column '{column}' not found (it holds the {name} field). Columns in "
                f"this data: {listed}. If the {name} is stored under another name, set "
                f"data.columns.{name}=<column name>."
            )
        return column

    # Media: `columns.image` holds one image or a list; `columns.video` one video. Data in the
    # canonical schema (save_parquet) carries `images` / `videos` lists instead.
    video = need("video", cm.video) if cm.video is not None else ("videos" if "videos" in present else None)
    if cm.image in present:
        image: str | None = cm.image
    elif cm.image == "image" and "images" in present:
        image = "images"
    else:
        image = None if video else need("image", cm.image)
    plan: dict[str, str | None] = {
        "prompt": need("prompt", cm.prompt) if cm.prompt is not None else None,
        "image": image,
        "video": video,
        "answer": need("answer", cm.answer),
        # The task column is optional by design: absent means data.default_task.
        "task": cm.task if cm.task in present else None,
    }
    if cm.question in present:
        plan["question"] = cm.question
    elif plan["prompt"]:
        plan["question"] = None  # read from the prompt's last user message instead
    else:
        need("question", cm.question)
    for name in ("qtype", "objects"):
        mapped = getattr(cm, name)
        plan[name] = need(name, mapped) if mapped is not None else (name if name in present else None)
    # Canonical-named extras (e.g. data saved by save_parquet) are carried over when present.
    for name in ("reasoning", "scene", "id", "image_id"):
        plan[name] = name if name in present else None
    return plan


def _build_split(
    cfg: DataConfig,
    split: str,
    sources: list[_Source],
    limit: int | None,
    reader: MediaReader,
    skipped: Counter[str],
) -> datasets.Dataset:
    out: dict[str, list] = {name: [] for name in FEATURES}
    seen_ids: set[str] = set()
    for src in sources:
        plan = _column_plan(cfg.columns, src)
        for index, raw in enumerate(src.rows()):
            if limit is not None and len(out["id"]) >= limit:
                break
            try:
                row = _convert_row(raw, plan, cfg.default_task, src, reader)
            except BadRow as bad:
                if cfg.on_bad_row == "error":
                    raise DataError(
                        f"{src.label}: row {index} (counting from 0), column '{bad.column}': "
                        f"{bad.message}. {_ROW_HINT}"
                    ) from None
                skipped[bad.reason] += 1
                continue
            row["id"] = row["id"] or f"{split}-{len(out['id']):06d}"
            if row["id"] in seen_ids:
                raise DataError(
                    f"{src.label}: row {index}, column 'id': id {row['id']!r} appears twice in "
                    "the split; ids must be unique (drop the id column to have ids generated)"
                )
            seen_ids.add(row["id"])
            for name in FEATURES:
                out[name].append(row[name])
    return datasets.Dataset.from_dict(out, features=FEATURES)


def _convert_row(
    raw: Mapping[str, Any], plan: dict[str, str | None], default_task: str, src: _Source, reader: MediaReader
) -> dict[str, Any]:
    """One user row -> one canonical row; raises BadRow naming the offending column."""
    task = _task(raw, plan["task"], default_task)
    prompt = _prompt(raw.get(plan["prompt"]), plan["prompt"]) if plan["prompt"] else None
    if plan["question"]:
        question = _clean(_text(raw.get(plan["question"]), plan["question"]))
    else:  # question comes from the prompt's last user message
        question = next(m["content"] for m in reversed(prompt) if m["role"] == "user" and m["content"])
    if not question:
        raise BadRow("empty_question", plan["question"] or "", "the question is empty")
    images, videos = _media(raw, plan, src, reader)
    first = images[0] if images else videos[0]["frames"][0]
    qtype = _text(raw.get(plan["qtype"]), plan["qtype"]).strip() if plan["qtype"] else ""
    return {
        "id": _text(raw.get(plan["id"]), "id").strip() if plan["id"] else "",
        "image_id": (_text(raw.get(plan["image_id"]), "image_id").strip() if plan["image_id"] else "")
        or f"img-{hashlib.sha1(first).hexdigest()[:12]}",
        "images": [{"bytes": b, "path": None} for b in images],
        "videos": [{"frames": [{"bytes": b, "path": None} for b in v["frames"]], "fps": v["fps"]} for v in videos],
        "question": question,
        "prompt": prompt or [{"role": "user", "content": question}],
        "task": task,
        "qtype": qtype or task,
        "answer": _answer(raw.get(plan["answer"]), plan["answer"]),
        "reasoning": _text(raw.get(plan["reasoning"]), "reasoning") if plan["reasoning"] else "",
        "objects": _objects(raw.get(plan["objects"]), plan["objects"]) if plan["objects"] else [],
        "scene": _scene(raw.get(plan["scene"])) if plan["scene"] else "",
    }


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, tuple)) and not len(value))


def _media(raw: Mapping[str, Any], plan: dict[str, str | None], src: _Source,
           reader: MediaReader) -> tuple[list[bytes], list[dict[str, Any]]]:
    """(image bytes, videos) of one row; a row needs at least one image or video."""
    videos: list[dict[str, Any]] = []
    column = plan["video"]
    if column and not _empty(raw.get(column)):
        value = raw.get(column)
        items = value if column == "videos" else [value]  # canonical rows hold a list of videos
        videos = [reader.read_video(v, column, src.base_dir) for v in items]
    column = plan["image"]
    value = raw.get(column) if column else None
    if column is None or (_empty(value) and (videos or column == "images")):
        images = []  # a video-only row (an empty canonical image list is checked below)
    else:
        images = reader.read_images(value, column, src.base_dir)
    if not images and not videos:
        raise BadRow("missing_image", plan["image"] or plan["video"] or "image",
                     "the row has no image and no video; every row needs at least one")
    return images, videos


def _text(value: Any, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise BadRow("bad_value", column, f"expected text, got {type(value).__name__}: {value!r:.80}")


def _clean(text: str) -> str:
    return _IMAGE_TOKEN.sub("", text).strip()


def _task(raw: Mapping[str, Any], column: str | None, default_task: str) -> str:
    value = raw.get(column) if column else None
    task = str(value).strip().lower() if value is not None and str(value).strip() else default_task
    if task not in TASKS:
        raise BadRow(
            "unknown_task",
            column or "task",
            f"unknown task {value!r}; valid tasks: {', '.join(TASKS)} (without a task column "
            "every row gets data.default_task)",
        )
    return task


def _answer(value: Any, column: str) -> str:
    if isinstance(value, bool):
        value = "yes" if value else "no"
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        value = value[0]  # VQA-style lists of reference answers: the first is the reference
    text = _text(value, column).strip()
    if not text:
        raise BadRow("empty_answer", column, "the answer is empty; every row needs a reference answer")
    return text


def _content_text(content: Any, column: str) -> str:
    if content is None or isinstance(content, str):
        return _clean(content or "")
    if isinstance(content, (list, tuple)):
        # Multimodal content blocks: keep the text, drop image blocks (the renderer adds its own).
        parts = [
            b if isinstance(b, str) else b.get("text") or ""
            for b in content
            if isinstance(b, str) or (isinstance(b, Mapping) and b.get("type", "text") == "text")
        ]
        return _clean(" ".join(p for p in parts if p))
    raise BadRow(
        "bad_prompt", column, f"message content must be text or a list of blocks, got {content!r:.80}"
    )


def _prompt(value: Any, column: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    if not isinstance(value, (list, tuple)) or not value:
        raise BadRow("bad_prompt", column, "expected a list of {'role', 'content'} messages")
    messages = []
    for m in value:
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise BadRow("bad_prompt", column, f"each message needs 'role' and 'content', got {m!r:.80}")
        messages.append({"role": str(m["role"]), "content": _content_text(m["content"], column)})
    if not any(m["role"] == "user" and m["content"] for m in messages):
        raise BadRow("bad_prompt", column, "the conversation has no user message with text")
    return messages


def _objects(value: Any, column: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise BadRow("bad_objects", column, f"not a valid JSON list: {text!r:.80}") from None
        else:
            value = text.split(",")
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise BadRow("bad_objects", column, f"expected a list of object names, got {value!r:.80}")
    return [v.strip() for v in value if v.strip()]


def _scene(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
