"""Typed data that crosses Ray boundaries: rollout requests, rollouts, scoring requests.

Plain dataclasses with no Ray/vLLM imports, so `rl/` and `rewards/` can use them in unit tests.
Images travel as PIL images (picklable); token ids as plain int lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["deep", "fast"]
MODES: tuple[Mode, Mode] = ("deep", "fast")


@dataclass
class Video:
    """A clip as decoded frames: what processors and vLLM take (with `metadata()`) and what crosses
    Ray boundaries. Frames are sampled already: every frame here is one the model sees."""

    frames: list[Any]  # [T] PIL RGB images, all of one size
    fps: float  # frames per second of `frames` (of the sampled clip, not of the source file)

    def array(self) -> Any:
        """The frames as one uint8 array [T, H, W, 3]."""
        import numpy as np

        return np.stack([np.asarray(f.convert("RGB")) for f in self.frames])

    def metadata(self) -> dict[str, Any]:
        """transformers' / vLLM's video metadata: the frames are the whole clip, in order."""
        width, height = self.frames[0].size
        n = len(self.frames)
        return {"total_num_frames": n, "fps": float(self.fps), "width": width, "height": height,
                "duration": n / float(self.fps), "frames_indices": list(range(n)), "video_backend": "opencv"}


def split_media(items: list[Any]) -> tuple[list[Any], list[Video]]:
    """(images, videos) of a list of a prompt's media items (PIL images and `Video`s), order kept.

    Rewards carry a prompt's media as one list (RLPR and the RLAIF-V labeler key caches on it);
    requests take images and videos apart."""
    return [x for x in items if not isinstance(x, Video)], [x for x in items if isinstance(x, Video)]


@dataclass
class SamplingSettings:
    """Decoding settings of one request; `max_tokens=None` takes the per-mode cap of the pool."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: bool = True


@dataclass
class RolloutRequest:
    """One prompt to sample `n` completions for, all in the same thinking `mode`."""

    request_id: str
    messages: list[dict[str, Any]]  # chat messages; image blocks as {"type": "image"}
    images: list[Any]  # PIL images, in the order of the image blocks
    mode: Mode = "deep"
    n: int = 1
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    videos: list[Video] = field(default_factory=list)  # in the order of the video blocks


@dataclass
class Completion:
    """One sampled completion of a request."""

    text: str
    completion_ids: list[int]  # [T]
    logprobs: list[float]  # [T] sampler log-prob of each completion token
    finish_reason: str  # "stop" | "length" | "error"


@dataclass
class Rollout:
    """The result of one RolloutRequest: `n` completions sampled under one weights version."""

    request_id: str
    mode: Mode
    prompt_text: str
    prompt_ids: list[int]  # [P] as the engine saw them (image tokens expanded)
    completions: list[Completion]
    version: int  # weights version every completion was sampled with
    actor: str = ""
    error: str | None = None  # set when the request could not be served; completions empty
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ScoreRequest:
    """Teacher-forced scoring of a fixed token sequence (RLPR, yes/no labelling).

    The engine returns the log-probability of every token at positions >= `target_start`,
    computed from logits divided by `temperature`.
    """

    token_ids: list[int]  # [L] full sequence, image tokens expanded
    images: list[Any]
    target_start: int  # first scored position (0 < target_start <= L)
    temperature: float = 1.0
    request_id: str = ""
    videos: list[Video] = field(default_factory=list)


@dataclass
class ScoreResult:
    """Log-probs of `token_ids[target_start:]` for one ScoreRequest (or an error)."""

    logprobs: list[float]  # [L - target_start]
    version: int = 0
    error: str | None = None


@dataclass
class WeightBucket:
    """A slice of a weight update: named tensors for one version, sent together."""

    version: int
    names: list[str]
    tensors: list[Any]  # torch tensors (or numpy arrays on the wire, see `to_wire`), same order as names
    last: bool = False  # the receiver applies the update and bumps its version on the last one
    dtypes: list[str] | None = None  # set on the wire: the torch dtype of each array

    def to_wire(self) -> WeightBucket:
        """The same bucket with numpy views of the (CPU, contiguous) tensors: Ray stores numpy
        arrays out of band and a reader maps them from the object store without a copy, where a
        pickled torch tensor is copied on both sides. dtypes numpy lacks travel as raw bits."""
        import torch

        arrays, dtypes = [], []
        for t in self.tensors:
            t = t.detach().contiguous()
            dtypes.append(str(t.dtype).removeprefix("torch."))
            if t.dtype == torch.bfloat16 or "float8" in str(t.dtype):
                t = t.view(torch.int16 if t.element_size() == 2 else torch.uint8)
            arrays.append(t.numpy())
        return WeightBucket(self.version, self.names, arrays, self.last, dtypes)

    def torch_tensors(self) -> list[Any]:
        """Torch tensors of this bucket (zero-copy views when it came over the wire)."""
        if self.dtypes is None:
            return list(self.tensors)
        import warnings

        import torch

        out = []
        for array, dtype in zip(self.tensors, self.dtypes, strict=True):
            with warnings.catch_warnings():  # object-store arrays are read-only; reload only reads them
                warnings.simplefilter("ignore", UserWarning)
                t = torch.from_numpy(array)
            want = getattr(torch, dtype)
            out.append(t if t.dtype == want else t.view(want))
        return out
