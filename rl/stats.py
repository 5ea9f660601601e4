"""Statistics for learning claims: paired bootstrap intervals of held-out deltas, seed summaries.

A held-out accuracy delta between two policies evaluated on the same questions is reported with
a 95% paired-bootstrap interval: resample the questions with replacement, recompute the mean
difference of the per-question scores, take the 2.5% and 97.5% quantiles (Efron & Tibshirani,
percentile interval). Pairing removes the between-question variance that both policies share,
so the interval is far tighter than two independent intervals. "No effect" is written when the
interval covers 0. Grids over seeds report the mean, the sample standard deviation and the range.
Pure functions of numbers (numpy only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_RESAMPLES = 2000


@dataclass(frozen=True)
class Delta:
    """Mean of `after - before` over paired items, with a bootstrap interval at `level`."""

    before: float
    after: float
    delta: float
    lo: float
    hi: float
    n: int
    level: float = 0.95

    @property
    def verdict(self) -> str:
        """"gain" / "loss" when the interval excludes 0, else "no effect"."""
        if self.lo > 0:
            return "gain"
        if self.hi < 0:
            return "loss"
        return "no effect"

    def to_dict(self) -> dict[str, float | int | str]:
        return {**asdict(self), "verdict": self.verdict}

    def text(self, scale: float = 100.0, unit: str = " points") -> str:
        """E.g. "+6.2 points [+2.1, +10.3] (gain)"."""
        return (f"{self.delta * scale:+.1f}{unit} [{self.lo * scale:+.1f}, {self.hi * scale:+.1f}] "
                f"({self.verdict})")


def paired_bootstrap(before: Sequence[float], after: Sequence[float], resamples: int = DEFAULT_RESAMPLES,
                     level: float = 0.95, seed: int = 0) -> Delta:
    """Paired percentile bootstrap of mean(after - before); item i of both lists is one question."""
    a = np.asarray(before, dtype=float)
    b = np.asarray(after, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_bootstrap needs two equal-length 1-D lists, got {a.shape} and {b.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = len(a)
    if n == 0:
        return Delta(0.0, 0.0, 0.0, 0.0, 0.0, 0, level)
    diff = b - a
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    means = diff[idx].mean(axis=1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return Delta(float(a.mean()), float(b.mean()), float(diff.mean()), float(lo), float(hi), n, level)


def paired_ratio_bootstrap(num_before: Sequence[float], den_before: Sequence[float], num_after: Sequence[float],
                           den_after: Sequence[float], resamples: int = DEFAULT_RESAMPLES, level: float = 0.95,
                           seed: int = 0) -> dict[str, Delta]:
    """Paired percentile bootstrap of a pooled ratio Σnum / Σden (e.g. CHAIRi = hallucinated
    mentions / mentions) before and after, resampling items (responses to the same prompts):
    {"delta": after − before, "ratio": after / before}, each with its interval. A resample whose
    denominator is 0 counts its ratio as 0 (as `chair_metrics` does); a resample whose before is 0
    is left out of the `ratio` interval."""
    arrays = [np.asarray(x, dtype=float) for x in (num_before, den_before, num_after, den_after)]
    n = len(arrays[0])
    if any(a.shape != (n,) for a in arrays):
        raise ValueError("paired_ratio_bootstrap needs four equal-length 1-D lists")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    nb, db, na, da = arrays
    before = float(ratio(np.array([nb.sum()]), np.array([db.sum()]))[0])
    after = float(ratio(np.array([na.sum()]), np.array([da.sum()]))[0])
    if n == 0:
        zero = Delta(0.0, 0.0, 0.0, 0.0, 0.0, 0, level)
        return {"delta": zero, "ratio": zero}
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    rb = ratio(nb[idx].sum(axis=1), db[idx].sum(axis=1))
    ra = ratio(na[idx].sum(axis=1), da[idx].sum(axis=1))
    tail = (1 - level) / 2
    lo, hi = np.quantile(ra - rb, [tail, 1 - tail])
    ok = rb > 0
    rel = ra[ok] / rb[ok] if ok.any() else np.array([np.nan])
    rlo, rhi = np.quantile(rel, [tail, 1 - tail])
    return {
        "delta": Delta(before, after, after - before, float(lo), float(hi), n, level),
        "ratio": Delta(1.0, after / before if before else float("nan"), after / before if before else float("nan"),
                       float(rlo), float(rhi), n, level),
    }


def paired_delta(before: dict[str, float], after: dict[str, float], **kw) -> Delta:
    """`paired_bootstrap` over the keys both score maps share (e.g. question id -> 0/1)."""
    keys = sorted(set(before) & set(after))
    return paired_bootstrap([before[k] for k in keys], [after[k] for k in keys], **kw)


@dataclass(frozen=True)
class SeedSummary:
    """Mean, sample std (ddof 1; 0 for one seed), min and max of one metric over seeds."""

    mean: float
    std: float
    min: float
    max: float
    n: int

    def text(self, fmt: str = ".3f") -> str:
        if self.n == 1:
            return format(self.mean, fmt)
        return f"{self.mean:{fmt}} ± {self.std:{fmt}} [{self.min:{fmt}}, {self.max:{fmt}}]"


def summarise_seeds(values: Sequence[float]) -> SeedSummary:
    vals = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if not len(vals):
        raise ValueError("summarise_seeds needs at least one finite value")
    std = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    return SeedSummary(float(vals.mean()), std, float(vals.min()), float(vals.max()), len(vals))
