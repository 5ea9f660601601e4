"""Tests of the user data loader: sources, column mapping, image forms, every bad-input error,
and skip mode."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import datasets
import pytest
from PIL import Image

import rl.data.loader as loader_mod
from rl.configlib import ConfigError, FieldError, from_dict
from rl.data.config import ColumnMap, DataConfig, ShapesConfig
from rl.data.loader import DataError, load_data
from rl.data.shapes import FEATURES, make_shapes, save_parquet


def _png(colour=(200, 10, 10), size=(8, 8), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _pixel(ds: datasets.Dataset, i: int) -> tuple[int, int, int]:
    img = ds[i]["images"][0]
    assert img.mode == "RGB"
    return img.getpixel((0, 0))


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "images"
    folder.mkdir(parents=True)
    (folder / "red.png").write_bytes(_png((200, 10, 10)))
    (folder / "blue.png").write_bytes(_png((10, 10, 200)))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (folder / "truncated.png").write_bytes(_png(size=(64, 64))[:60])
    return folder


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """Nothing here may reach the hub unless a test installs its own fake."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"unexpected hub lookup {args}")

    monkeypatch.setattr(loader_mod.datasets, "load_dataset", refuse)


GOOD = [
    {"question": "<image>\nWhat colour is it?", "image": "images/red.png", "answer": "red"},
    {"question": "Where is it?", "image": "images/blue.png", "answer": "in the middle", "task": "freeform"},
    {"question": "Is it red?", "image": "images/red.png", "answer": "yes", "task": "short"},
]


def test_shapes_source_with_limits():
    cfg = DataConfig(
        shapes=ShapesConfig(num_train_images=6, num_heldout_images=3, questions_per_image=1), max_train=4
    )
    data = load_data(cfg)
    assert len(data.train) == 4 and len(data.eval) == 3
    assert data.train.features == FEATURES and data.skipped == {}


def test_jsonl_folder_with_relative_image_paths(image_dir):
    root = image_dir.parent
    _write_jsonl(root / "train.jsonl", GOOD)
    _write_jsonl(root / "heldout.jsonl", GOOD[:1])
    data = load_data(DataConfig(source=str(root)))
    train = data.train
    assert train.features == FEATURES
    assert len(train) == 3 and len(data.eval) == 1
    assert train["question"][0] == "What colour is it?"  # the <image> placeholder is dropped
    assert train["task"] == ["short", "freeform", "short"]  # missing task -> default_task
    assert train["qtype"] == train["task"]
    assert train["prompt"][1] == [{"role": "user", "content": "Where is it?"}]
    assert train["reasoning"] == ["", "", ""] and train["objects"] == [[], [], []]
    assert [_pixel(train, i) for i in range(3)] == [(200, 10, 10), (10, 10, 200), (200, 10, 10)]
    ids, image_ids = train["id"], train["image_id"]
    assert len(set(ids)) == 3 and not set(ids) & set(data.eval["id"])
    assert image_ids[0] == image_ids[2] != image_ids[1]  # one id per distinct image


def test_single_file_with_image_root(image_dir, tmp_path):
    rows = [dict(r, image=Path(r["image"]).name) for r in GOOD]
    path = _write_jsonl(tmp_path / "elsewhere.jsonl", rows)
    data = load_data(DataConfig(source=str(path), image_root=str(image_dir)))
    assert len(data.train) == 3 and len(data.eval) == 0
    assert data.eval.features == FEATURES


def test_json_array_file(image_dir):
    path = image_dir.parent / "rows.json"
    path.write_text(json.dumps({"data": GOOD}))
    data = load_data(DataConfig(source=str(path)))
    assert data.train["answer"] == ["red", "in the middle", "yes"]


def test_parquet_with_bytes_and_column_mapping(tmp_path):
    images = [_png((10, 200, 10)), _png(90, mode="L"), _png((1, 2, 3, 255), mode="RGBA")]
    user = datasets.Dataset.from_dict(
        {
            "query": ["q1", "q2", "q3"],
            "picture": images,
            "gold": ["a1", "a2", "a3"],
            "kind": ["exists", "count", "colour"],
            "things": [["green square"], [], ["x", "y"]],
        }
    )
    user.to_parquet(str(tmp_path / "train.parquet"))
    cfg = DataConfig(
        source=str(tmp_path / "train.parquet"),
        default_task="freeform",
        columns=ColumnMap(question="query", image="picture", answer="gold", qtype="kind", objects="things"),
    )
    train = load_data(cfg).train
    assert train["question"] == ["q1", "q2", "q3"] and train["answer"] == ["a1", "a2", "a3"]
    assert train["task"] == ["freeform"] * 3 and train["qtype"] == ["exists", "count", "colour"]
    assert train["objects"] == [["green square"], [], ["x", "y"]]
    assert [_pixel(train, i) for i in range(3)] == [(10, 200, 10), (90, 90, 90), (1, 2, 3)]
    raw = train.cast_column("images", datasets.List(datasets.Image(decode=False)))["images"]
    assert raw[0][0]["bytes"] == images[0]  # RGB PNG kept byte for byte; L/RGBA re-encoded as RGB


def test_saved_shapes_round_trip_through_loader(tmp_path):
    dd = make_shapes(num_train_images=10, num_heldout_images=4, questions_per_image=2, seed=3)
    save_parquet(dd, tmp_path)
    data = load_data(DataConfig(source=str(tmp_path)))
    for ours, theirs in ((data.train, dd["train"]), (data.eval, dd["heldout"])):
        assert ours.data.table.equals(theirs.data.table)  # image dicts, ids, objects, scene...


def test_prompt_column_supplies_the_question(image_dir):
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": "<image>What is it?"}],
                },
            ],
            "image": "images/red.png",
            "answer": "a red square",
        }
    ]
    path = _write_jsonl(image_dir.parent / "train.jsonl", rows)
    cfg = DataConfig(source=str(path), columns=ColumnMap(prompt="messages", question="nope"))
    train = load_data(cfg).train
    assert train["question"] == ["What is it?"]
    assert train["prompt"] == [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is it?"}]
    ]


def test_hub_source_with_pil_images(monkeypatch):
    def fake_load_dataset(name, *args, **kwargs):
        assert name == "someone/vqa"
        feats = datasets.Features(
            {"q": datasets.Value("string"), "img": datasets.Image(), "a": datasets.Value("string")}
        )
        split = datasets.Dataset.from_dict(
            {"q": ["what?"], "img": [Image.new("RGB", (4, 4), (5, 6, 7))], "a": ["this"]}, features=feats
        )
        return datasets.DatasetDict({"train": split, "test": split})

    monkeypatch.setattr(loader_mod.datasets, "load_dataset", fake_load_dataset)
    cfg = DataConfig(
        source="someone/vqa", eval_split="test", columns=ColumnMap(question="q", image="img", answer="a")
    )
    data = load_data(cfg)
    assert len(data.train) == 1 and len(data.eval) == 1
    assert _pixel(data.train, 0) == (5, 6, 7)


def test_hub_failure_is_a_data_error(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(loader_mod.datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"'someone/vqa' is not a local file or folder.*no network"):
        load_data(DataConfig(source="someone/vqa"))


# ----------------------------------------------------------------------------- bad input


def _load_rows(folder: Path, rows: list[dict], **kwargs):
    path = _write_jsonl(folder / "train.jsonl", rows)
    return path, load_data(DataConfig(source=str(path), **kwargs))


def test_missing_column_names_column_and_config_key(image_dir):
    rows = [{"question": "q", "picture": "images/red.png", "answer": "a"}]
    with pytest.raises(DataError) as err:
        _load_rows(image_dir.parent, rows, on_bad_row="skip")  # never skipped: always fatal
    msg = str(err.value)
    assert "train.jsonl" in msg and "column 'image' not found" in msg
    assert "Columns in this data: question, picture, answer" in msg
    assert "data.columns.image=<column name>" in msg


def test_missing_answer_column(image_dir):
    with pytest.raises(DataError, match=r"column 'answer' not found.*data\.columns\.answer"):
        _load_rows(image_dir.parent, [{"question": "q", "image": "images/red.png"}])


@pytest.mark.parametrize("name", ["broken.png", "truncated.png"])
def test_corrupt_image_file(image_dir, name):
    rows = [GOOD[0], dict(GOOD[0], image=f"images/{name}")]
    with pytest.raises(DataError) as err:
        _load_rows(image_dir.parent, rows)
    msg = str(err.value)
    assert "train.jsonl: row 1" in msg and "column 'image'" in msg
    assert str(image_dir / name) in msg and "cannot decode" in msg
    assert "data.on_bad_row=skip" in msg


def test_nonexistent_image_path(image_dir):
    with pytest.raises(DataError) as err:
        _load_rows(image_dir.parent, [dict(GOOD[0], image="images/missing.png")])
    msg = str(err.value)
    assert f"image file {image_dir / 'missing.png'} does not exist" in msg
    assert "row 0" in msg and "data.image_root" in msg


def test_corrupt_image_bytes_in_parquet(tmp_path):
    datasets.Dataset.from_dict({"question": ["q"], "image": [b"garbage"], "answer": ["a"]}).to_parquet(
        str(tmp_path / "train.parquet")
    )
    with pytest.raises(DataError, match=r"row 0 .*column 'image': cannot decode the image bytes"):
        load_data(DataConfig(source=str(tmp_path / "train.parquet")))


def test_empty_answer(image_dir):
    with pytest.raises(DataError, match=r"row 1 \(counting from 0\), column 'answer': the answer is empty"):
        _load_rows(image_dir.parent, [GOOD[0], dict(GOOD[0], answer="  ")])


def test_unknown_task(image_dir):
    with pytest.raises(DataError) as err:
        _load_rows(image_dir.parent, [dict(GOOD[0], task="essay")])
    assert "column 'task': unknown task 'essay'; valid tasks: short, freeform, description" in str(err.value)


@pytest.mark.parametrize("source", ["nope.jsonl", "data/missing.parquet", "./some/folder"])
def test_nonexistent_source_path(tmp_path, monkeypatch, source):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=rf"data source {re.escape(source)} does not exist"):
        load_data(DataConfig(source=source))


def test_folder_without_train_files(tmp_path):
    _write_jsonl(tmp_path / "validation.jsonl", GOOD)
    with pytest.raises(DataError, match=r"no data file for split 'train'.*validation\.jsonl"):
        load_data(DataConfig(source=str(tmp_path)))


def test_invalid_jsonl_line(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps(GOOD[0]) + "\n{not json\n")
    with pytest.raises(DataError, match=r"train\.jsonl: line 2 is not valid JSON"):
        load_data(DataConfig(source=str(tmp_path / "train.jsonl")))


def test_skip_mode_counts_reasons(image_dir, caplog):
    rows = [
        GOOD[0],
        dict(GOOD[0], image="images/broken.png"),
        dict(GOOD[0], image="images/gone.png"),
        dict(GOOD[0], answer=""),
        dict(GOOD[0], task="essay"),
        dict(GOOD[0], image=None),
        GOOD[1],
    ]
    with caplog.at_level(logging.WARNING, logger="rl.data.loader"):
        _, data = _load_rows(image_dir.parent, rows, on_bad_row="skip")
    assert data.train["answer"] == ["red", "in the middle"]
    assert data.skipped == {
        "bad_image": 1,
        "image_not_found": 1,
        "empty_answer": 1,
        "unknown_task": 1,
        "missing_image": 1,
    }
    summary = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(summary) == 1 and "skipped 5 bad rows" in summary[0] and "\n" not in summary[0]


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "data, key",
    [
        ({"on_bad_row": "ignore"}, "data.on_bad_row"),
        ({"default_task": "essay"}, "data.default_task"),
        ({"max_train": -1}, "data.max_train"),
        ({"columns": {"answer": ""}}, "data.columns.answer"),
        ({"columns": {"colour": "c"}}, "data.columns.colour"),
        ({"shapes": {"num_heldout_images": -2}}, "data.shapes.num_heldout_images"),
    ],
)
def test_data_config_errors_name_the_key(data, key):
    with pytest.raises(ConfigError, match=re.escape(f"'{key}'")):
        from_dict(DataConfig, data, prefix="data.")


def test_data_config_direct_validation():
    DataConfig().validate()
    cfg = DataConfig(shapes=ShapesConfig(seed=1, image_size=4))
    with pytest.raises(FieldError) as err:
        cfg.validate()
    assert err.value.field == "shapes.image_size"


def test_image_lists_and_video_files_load_into_the_canonical_columns(tmp_path):
    """A list-of-images column and a video file column (decoded with OpenCV into evenly spaced
    frames, fps that keeps the clip's duration); a missing video file is named."""
    import cv2
    import numpy as np

    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.png").write_bytes(_png((200, 10, 10)))
    (folder / "b.png").write_bytes(_png((10, 10, 200)))
    writer = cv2.VideoWriter(str(folder / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 32))
    for i in range(20):  # 2 s at 10 fps, the red channel rising frame by frame
        writer.write(np.full((32, 32, 3), (0, 0, 12 * i), dtype=np.uint8))
    writer.release()
    rows = [{"question": "Which image holds more?", "pics": ["a.png", "b.png"], "clip": None, "answer": "first"},
            {"question": "Which way does it move?", "pics": [], "clip": "clip.avi", "answer": "left"}]
    _write_jsonl(folder / "rows.jsonl", rows)
    cfg = DataConfig(source=str(folder / "rows.jsonl"), columns=ColumnMap(image="pics", video="clip"), video_frames=4,
                     eval_split="")
    data = load_data(cfg)
    two, clip = data.train[0], data.train[1]
    assert [im.getpixel((0, 0)) for im in two["images"]] == [(200, 10, 10), (10, 10, 200)] and two["videos"] == []
    assert clip["images"] == [] and len(clip["videos"]) == 1
    video = clip["videos"][0]
    assert len(video["frames"]) == 4 and video["fps"] == pytest.approx(2.0)  # 4 frames over 2 s
    reds = [f.getpixel((0, 0))[0] for f in video["frames"]]
    assert reds == sorted(reds) and reds[-1] - reds[0] > 150  # first to last frame, in order
    _write_jsonl(folder / "rows.jsonl", [dict(rows[1], clip="missing.avi")])
    with pytest.raises(DataError, match="missing.avi"):
        load_data(cfg)
