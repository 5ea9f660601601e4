"""Reading the images and videos of user data: verified, re-encoded where needed, videos decoded.

Images come as paths, bytes, {"bytes", "path"} dicts or PIL images and become encoded bytes that
decode to an RGB image (PNG/JPEG/WEBP kept byte-for-byte when already RGB). A video comes as a
file (decoded with OpenCV, `data.video_frames` frames taken at even spacing, its fps from the file),
a list of frame images (at `data.video_fps`), or a {"frames", "fps"} dict; it becomes
{"frames": [encoded frame bytes], "fps": fps of the taken frames}. A broken input raises `BadRow`
naming the column and what is wrong, which the loader turns into an error or a skipped row.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

# Formats kept byte-for-byte when the image is already RGB; anything else is re-encoded as PNG
# so every image in a loaded dataset decodes to an RGB PIL image.
_KEEP_FORMATS = ("PNG", "JPEG", "WEBP")


class BadRow(Exception):
    """One row is unusable; `reason` is the key counted in `LoadedData.skipped`."""

    def __init__(self, reason: str, column: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.column = column
        self.message = message


class MediaReader:
    """Reads and verifies images (`read`, `read_images`) and videos (`read_video`).

    Image paths are cached because datasets often ask several questions about one image.
    """

    def __init__(self, image_root: Path | None, video_frames: int = 8, video_fps: float = 2.0):
        self.image_root = image_root
        self.video_frames = video_frames
        self.video_fps = video_fps
        self._by_path: dict[Path, bytes | BadRow] = {}

    def read_images(self, value: Any, column: str, base_dir: Path) -> list[bytes]:
        """One image, or a list of them (a multi-image prompt), as encoded bytes."""
        if isinstance(value, (list, tuple)):
            if not value:
                raise BadRow("missing_image", column, "the image list is empty")
            return [self.read(v, column, base_dir) for v in value]
        return [self.read(value, column, base_dir)]

    def read_video(self, value: Any, column: str, base_dir: Path) -> dict[str, Any]:
        """{"frames": [bytes], "fps": float} from a video file, a list of frames or a dict."""
        if isinstance(value, Mapping) and "frames" in value:
            fps = float(value.get("fps") or self.video_fps)
            frames = [self.read(f, column, base_dir) for f in value["frames"]]
        elif isinstance(value, (list, tuple)):
            fps, frames = self.video_fps, [self.read(f, column, base_dir) for f in value]
        elif isinstance(value, str) and value.strip():
            path = Path(value.strip()).expanduser()
            if not path.is_absolute():
                path = (self.image_root or base_dir) / path
            frames, fps = decode_video_file(path, self.video_frames, column)
        else:
            raise BadRow("bad_video", column, f"cannot use a {type(value).__name__} as a video; give a video "
                         "file path, a list of frame images or a {'frames', 'fps'} dict")
        if len(frames) < 2:
            raise BadRow("bad_video", column, f"a video needs at least 2 frames, got {len(frames)}")
        if not fps > 0:
            raise BadRow("bad_video", column, f"the video's fps must be positive, got {fps}")
        return {"frames": frames, "fps": fps}

    def read(self, value: Any, column: str, base_dir: Path) -> bytes:
        if isinstance(value, Image.Image):
            return _png(value.convert("RGB"))
        if isinstance(value, Mapping):
            data, path = value.get("bytes"), value.get("path")
            value = data if data else path
        if isinstance(value, (bytes, bytearray, memoryview)) and len(value):
            return _verified(bytes(value), column, "the image bytes")
        if isinstance(value, str) and value.strip():
            return self._read_path(value.strip(), column, base_dir)
        if value is None or (isinstance(value, (str, bytes, bytearray, memoryview)) and not len(value)):
            raise BadRow("missing_image", column, "the image is empty; every row needs an image")
        raise BadRow(
            "bad_image",
            column,
            f"cannot use a {type(value).__name__} as an image; "
            "give a file path, bytes or a {'bytes', 'path'} dict",
        )

    def _read_path(self, text: str, column: str, base_dir: Path) -> bytes:
        path = Path(text).expanduser()
        base = self.image_root or base_dir
        if not path.is_absolute():
            path = base / path
        if path not in self._by_path:
            try:
                self._by_path[path] = self._load(path, column, base)
            except BadRow as bad:
                self._by_path[path] = bad  # the same broken file fails every row that uses it
        cached = self._by_path[path]
        if isinstance(cached, BadRow):
            raise BadRow(cached.reason, column, cached.message)
        return cached

    def _load(self, path: Path, column: str, base: Path) -> bytes:
        if not path.is_file():
            raise BadRow(
                "image_not_found",
                column,
                f"image file {path} does not exist (relative paths resolve against {base}; "
                "set data.image_root to change that)",
            )
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BadRow("bad_image", column, f"cannot read image file {path} ({exc})") from None
        return _verified(data, column, f"image file {path}")


def _verified(data: bytes, column: str, what: str) -> bytes:
    """Check that `data` is a whole, decodable image; re-encode as PNG unless already RGB
    PNG/JPEG/WEBP."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()  # structural check (bad chunks, CRCs) without decoding pixels
        with Image.open(io.BytesIO(data)) as img:
            fmt, mode = img.format, img.mode
            rgb = img.convert("RGB")  # full decode: catches truncated pixel data
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for bad data
        raise BadRow("bad_image", column, f"cannot decode {what} as an image ({exc})") from None
    if mode == "RGB" and fmt in _KEEP_FORMATS:
        return data
    return _png(rgb)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def decode_video_file(path: Path, num_frames: int, column: str) -> tuple[list[bytes], float]:
    """`num_frames` frames at even spacing over the clip (PNG bytes) and the fps of those frames.

    Decoded with OpenCV (`cv2`, installed with vLLM). The returned fps keeps the clip's duration:
    frames taken over T seconds are `num_frames / T` per second.
    """
    if not path.is_file():
        raise BadRow("video_not_found", column, f"video file {path} does not exist")
    try:
        import cv2
    except ImportError as exc:
        raise BadRow("bad_video", column, f"decoding video files needs OpenCV (pip install "
                     f"opencv-python-headless): {exc}") from None
    cap = cv2.VideoCapture(str(path))
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        source_fps = float(cap.get(cv2.CAP_PROP_FPS))
        if not cap.isOpened() or total < 1 or not source_fps > 0:
            raise BadRow("bad_video", column, f"cannot decode video file {path} (OpenCV reads {total} frames "
                         f"at {source_fps} fps)")
        take = min(num_frames, total)
        wanted = [round(i * (total - 1) / max(take - 1, 1)) for i in range(take)]
        frames: list[bytes] = []
        for index in wanted:
            cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, bgr = cap.read()
            if not ok:
                raise BadRow("bad_video", column, f"video file {path}: frame {index} of {total} cannot be decoded")
            frames.append(_png(Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))))
    finally:
        cap.release()
    duration = total / source_fps
    return frames, take / duration
