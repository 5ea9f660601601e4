"""Reading the media of a canonical row (`rl.data.shapes.FEATURES`) and turning a row into a request.

A row holds `images` (0 or more, decoded to PIL by `datasets`) and `videos` (0 or more, each
{"frames": [PIL], "fps": float}); every stage reads them through these functions, so the schema
has one reader.
"""

from __future__ import annotations

from typing import Any

from rollouts.types import RolloutRequest, SamplingSettings, Video


def row_images(row: dict[str, Any]) -> list[Any]:
    return list(row.get("images") or [])


def row_videos(row: dict[str, Any]) -> list[Video]:
    return [Video(list(v["frames"]), float(v["fps"])) for v in row.get("videos") or []]


def row_request(row: dict[str, Any], request_id: str, mode: str, n: int, sampling: SamplingSettings) -> RolloutRequest:
    """The rollout request of a row's prompt with its images and videos."""
    return RolloutRequest(request_id, list(row["prompt"]), row_images(row), mode, n, sampling, row_videos(row))


def undecoded_media(dataset: Any) -> tuple[list[list[Any]], list[list[Any]]]:
    """Every row's `images` and `videos` as stored (encoded bytes, not decoded): cheap to carry
    into another dataset, decoded again when read there. Missing columns give empty lists."""
    out = []
    for name in ("images", "videos"):
        if name in dataset.column_names:
            column = dataset.select_columns([name]).cast_column(name, _undecoded(dataset.features[name]))
            out.append([list(x) for x in column[name]])
        else:
            out.append([[] for _ in range(len(dataset))])
    return out[0], out[1]


def media_counts(dataset: Any) -> tuple[int, int]:
    """(most images, most videos) in one row of `dataset`."""
    images, videos = undecoded_media(dataset)
    return max((len(x) for x in images), default=0), max((len(x) for x in videos), default=0)


def _undecoded(feature: Any) -> Any:
    import datasets

    if isinstance(feature, datasets.List) and isinstance(feature.feature, datasets.Image):
        return datasets.List(datasets.Image(decode=False))
    if isinstance(feature, datasets.List) and isinstance(feature.feature, dict):
        return datasets.List({"frames": datasets.List(datasets.Image(decode=False)), "fps": datasets.Value("float32")})
    return feature
