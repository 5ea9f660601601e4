"""Shared plumbing of the reward functions: completion text, aligned columns, modes, image keys.

Every reward follows TRL's signature `fn(prompts, completions, **columns) -> list[float | None]`;
the helpers here turn TRL's inputs (plain strings or conversational message lists, per-row
column lists) into the plain values the pure math works on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

MODES = ("deep", "fast")
DEFAULT_MODE = "deep"


def completion_text(completion: Any) -> str:
    """The text of one completion, in TRL's standard or conversational form.

    Standard: a string. Conversational: a list of messages (the last assistant message's content
    is taken; content may be a string or a list of `{"type": "text", "text": ...}` blocks) or a
    single message dict. `None` reads as the empty string.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return _content_text(completion.get("content"))
    if isinstance(completion, Sequence):
        messages = [m for m in completion if isinstance(m, Mapping)]
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"]
        chosen = assistant[-1] if assistant else (messages[-1] if messages else None)
        return _content_text(chosen.get("content")) if chosen is not None else ""
    return str(completion)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, Mapping) and block.get("type", "text") == "text":
                parts.append(str(block.get("text") or ""))
        return "".join(parts)
    return str(content)


def completion_texts(completions: Sequence[Any]) -> list[str]:
    """`completion_text` of every completion of a batch."""
    return [completion_text(c) for c in completions]


def column(columns: Mapping[str, Any], name: str, n: int, default: Any = None) -> list[Any]:
    """The column `name` as a list aligned with `n` completions (or `[default] * n` if absent).

    A column that is present but has the wrong length is a pipeline bug: raise, naming it.
    """
    values = columns.get(name)
    if values is None:
        return [default] * n
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(
            f"reward column {name!r} must be a list aligned with the completions, got {values!r}"
        )
    if len(values) != n:
        raise ValueError(f"reward column {name!r} has {len(values)} values for {n} completions")
    return list(values)


def modes_column(columns: Mapping[str, Any], n: int) -> list[str]:
    """The `mode` column ("deep"/"fast"), `"deep"` where absent or None; other values raise."""
    modes = [DEFAULT_MODE if m is None else m for m in column(columns, "mode", n, DEFAULT_MODE)]
    for m in modes:
        if m not in MODES:
            raise ValueError(f"mode must be 'deep' or 'fast', got {m!r}")
    return modes


def images_column(columns: Mapping[str, Any], n: int) -> list[list[Any]]:
    """Per-row image lists from the `images` (or TRL's singular `image`) column; [] where none."""
    name = "images" if columns.get("images") is not None else "image"
    rows = column(columns, name, n, None)
    out: list[list[Any]] = []
    for row in rows:
        if row is None:
            out.append([])
        elif isinstance(row, (list, tuple)):
            out.append([im for im in row if im is not None])
        else:
            out.append([row])
    return out


def media_column(columns: Mapping[str, Any], n: int) -> list[list[Any]]:
    """Per-row media lists: the images (`images_column`) followed by the `videos` column's
    `rollouts.types.Video` items (rows without videos add nothing)."""
    images = images_column(columns, n)
    videos = column(columns, "videos", n, None) if columns.get("videos") is not None else [None] * n
    return [imgs + list(vids or []) for imgs, vids in zip(images, videos, strict=True)]


def image_digest(image: Any) -> str:
    """A content hash of one image, stable across processes (sha1 hex).

    PIL images hash their mode, size and pixel bytes; bytes hash themselves; `datasets`-style
    dicts hash their `bytes` (else their `path`); strings (paths/URLs) hash the string; arrays
    hash dtype, shape and bytes. Anything else hashes its `repr`.
    """
    h = hashlib.sha1()
    frames = getattr(image, "frames", None)
    if frames is not None and hasattr(image, "fps"):  # a rollouts.types.Video
        h.update(f"video|{image.fps}|".encode())
        for frame in frames:
            h.update(image_digest(frame).encode())
        return h.hexdigest()
    if image is None:
        h.update(b"none")
    elif isinstance(image, (bytes, bytearray, memoryview)):
        h.update(b"bytes:")
        h.update(bytes(image))
    elif isinstance(image, str):
        h.update(b"str:" + image.encode("utf-8", "surrogatepass"))
    elif isinstance(image, Mapping):
        if image.get("bytes") is not None:
            return image_digest(image["bytes"])
        return image_digest(str(image.get("path")))
    elif hasattr(image, "tobytes") and hasattr(image, "mode") and hasattr(image, "size"):
        h.update(f"pil:{image.mode}:{image.size}:".encode())
        h.update(image.tobytes())
    elif hasattr(image, "tobytes") and hasattr(image, "shape"):
        h.update(f"array:{getattr(image, 'dtype', '')}:{tuple(image.shape)}:".encode())
        h.update(image.tobytes())
    else:
        h.update(b"repr:" + repr(image).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def images_key(images: Sequence[Any], memo: dict[int, str] | None = None) -> str:
    """One key for a row's ordered image list ("" when it has none).

    `memo` (id(image) -> digest) lets a batch hash each shared image object once: the samples of
    one prompt group usually carry the same PIL objects.
    """
    if not images:
        return ""
    digests = []
    for im in images:
        if memo is not None and id(im) in memo:
            digests.append(memo[id(im)])
            continue
        d = image_digest(im)
        if memo is not None:
            memo[id(im)] = d
        digests.append(d)
    return hashlib.sha1("|".join(digests).encode()).hexdigest()
