"""How much of a sweep's spread one parameter explains, and whether the trials are enough to tell.

For each parameter: the share of the metric's variance explained by that parameter alone (between-group
variance for listed values, a quadratic fit for ranges, in log space for log ranges), its spread over
bootstrap resamples of the trials, and a permutation test: the same share computed with the metric shuffled
across trials, which is what the parameter "explains" by chance with this many trials. A share is reported as
backed only when chance rarely reaches it (p < 0.05). With 6 trials, chance alone often explains half the
variance, which is how a normalised importance of 44% can mean nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

ALPHA = 0.05  # the usual significance level
PERMUTATIONS = 999  # p-values to 0.001
RESAMPLES = 200  # bootstrap resamples for the spread


@dataclass(frozen=True)
class Importance:
    """One parameter's share of the variance, its spread, the chance level and the p-value."""

    param: str
    share: float  # fraction of the metric's variance explained by this parameter alone
    low: float  # 10th percentile over bootstrap resamples
    high: float  # 90th percentile
    chance: float  # 95th percentile of the share with the metric shuffled
    p_value: float
    trials: int

    @property
    def backed(self) -> bool:
        return self.p_value < ALPHA

    def as_json(self) -> dict[str, Any]:
        return {
            "share": round(self.share, 4),
            "spread": [round(self.low, 4), round(self.high, 4)],
            "chance": round(self.chance, 4),
            "p_value": round(self.p_value, 4),
            "trials": self.trials,
            "backed": self.backed,
        }


def _groups_share(x: np.ndarray, y: np.ndarray) -> float:
    total = float(((y - y.mean()) ** 2).sum())
    if total <= 0:
        return 0.0
    between = 0.0
    for value in np.unique(x):
        members = y[x == value]
        between += len(members) * float((members.mean() - y.mean()) ** 2)
    return between / total


def _fit_share(x: np.ndarray, y: np.ndarray) -> float:
    total = float(((y - y.mean()) ** 2).sum())
    if total <= 0 or len(np.unique(x)) < 2:
        return 0.0
    degree = 2 if len(np.unique(x)) >= 3 else 1
    span = float(x.max() - x.min()) or 1.0
    z = (x - x.min()) / span
    design = np.vander(z, degree + 1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = float(((y - design @ coef) ** 2).sum())
    return max(0.0, min(1.0, 1.0 - residual / total))


def variance_share(x: np.ndarray, y: np.ndarray, kind: str) -> float:
    """The share of y's variance x explains: `groups` (listed values) or `range`/`log_range` (a quadratic)."""
    if kind == "groups":
        return _groups_share(x, y)
    return _fit_share(np.log10(x) if kind == "log_range" else x, y)


def assess(param: str, values: list[Any], metric: list[float], kind: str, seed: int = 0) -> Importance | None:
    """The parameter's share with its bootstrap spread and permutation test, or None when it cannot vary."""
    n = len(values)
    if n < 3 or len({repr(v) for v in values}) < 2:
        return None
    if kind == "groups":
        codes = {key: i for i, key in enumerate(dict.fromkeys(repr(v) for v in values))}
        x = np.array([codes[repr(v)] for v in values], dtype=float)
    else:
        x = np.array([float(v) for v in values], dtype=float)
        if kind == "log_range" and (x <= 0).any():
            kind = "range"
    y = np.array(metric, dtype=float)
    rng = np.random.default_rng(seed)
    share = variance_share(x, y, kind)
    null = np.array([variance_share(x, rng.permutation(y), kind) for _ in range(PERMUTATIONS)])
    p_value = (1 + int((null >= share - 1e-12).sum())) / (PERMUTATIONS + 1)
    boots = []
    for _ in range(RESAMPLES):
        pick = rng.integers(0, n, n)
        boots.append(variance_share(x[pick], y[pick], kind))
    low, high = (float(q) for q in np.percentile(boots, [10, 90]))
    return Importance(
        param=param,
        share=share,
        low=low,
        high=high,
        chance=float(np.percentile(null, 95)),
        p_value=p_value,
        trials=n,
    )


def kind_of(distribution: Any) -> str:
    """`groups` for listed values, `log_range` for a log range, else `range` (from an optuna distribution)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return "groups"
    if isinstance(distribution, FloatDistribution | IntDistribution) and distribution.log:
        return "log_range"
    return "range"
