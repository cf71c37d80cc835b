"""Running mean and variance of observations, mergeable across workers.

Workers return per-pair ``count / sum / sum of squares``; the driver merges each generation's
total into the running statistics with the parallel update of Chan, Golub & LeVeque (1979),
so merging ``a`` then ``b`` equals the statistics of the concatenated data (up to rounding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RunningStat:
    """``count``, ``mean`` ``(k,)`` and ``m2`` ``(k,)`` (sum of squared deviations)."""

    count: float
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def zeros(cls, dim: int) -> RunningStat:
        return cls(0.0, np.zeros(dim), np.zeros(dim))

    @classmethod
    def of(cls, x: np.ndarray) -> RunningStat:
        """The statistics of a batch ``(m, k)``."""
        x = np.asarray(x, dtype=np.float64)
        return cls(float(len(x)), x.mean(axis=0), ((x - x.mean(axis=0)) ** 2).sum(axis=0))

    def merge_sums(self, count: float, total: np.ndarray, total_sq: np.ndarray) -> RunningStat:
        """Merge a batch given by its count, sum and sum of squares."""
        if count <= 0:
            return self
        b_mean = total / count
        b_m2 = np.maximum(total_sq - count * b_mean * b_mean, 0.0)
        return self.merge(RunningStat(float(count), b_mean, b_m2))

    def merge(self, other: RunningStat) -> RunningStat:
        """Chan et al.: ``m2 = m2_a + m2_b + delta^2 n_a n_b / n``."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + delta * delta * (self.count * other.count / n)
        return RunningStat(n, mean, m2)

    @property
    def var(self) -> np.ndarray:
        return self.m2 / self.count if self.count > 0 else np.ones_like(self.mean)

    def std(self, floor: float = 1e-2) -> np.ndarray:
        """Standard deviation, floored (a constant observation must not divide by ~0)."""
        return np.maximum(np.sqrt(self.var), floor)

    def to_arrays(self, prefix: str = "obs/") -> dict[str, np.ndarray]:
        return {
            f"{prefix}count": np.asarray(self.count),
            f"{prefix}mean": self.mean,
            f"{prefix}m2": self.m2,
        }

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "obs/") -> RunningStat:
        return cls(
            float(arrays[f"{prefix}count"]),
            np.array(arrays[f"{prefix}mean"], dtype=np.float64),
            np.array(arrays[f"{prefix}m2"], dtype=np.float64),
        )
