"""Shared-seed noise: a perturbation id names its ``z`` everywhere.

A perturbation is named by a 64-bit integer id, a hash of ``(run seed, generation, pair index)``.
Anyone holding the id rebuilds the same ``z ~ N(0, I_d)`` (float32) bit for bit, in any process
of the same numpy build: the worker that scores ``mean ± sigma * z``, the driver that computes
the update. Nothing of size ``d`` ever has to travel (Salimans et al. 2017, §2.1).

Two schemes behind one interface, chosen by measurement (``scripts/bench_noise.py``):

- ``NoiseTable``: one read-only float32 table built once from a fixed seed (OpenAI ES). The id
  picks an offset; ``z`` is a slice. The driver's update streams over the slices in column
  blocks with BLAS ``saxpy`` and sits near the memory-bandwidth floor. What the update derives
  from the table (squares, block sums of squares) belongs to the ``NoiseTable`` that needs it,
  is built on first use and is freed with it; the table itself is shared by its live holders.
- ``NoiseGenerator``: a counter-based generator per id (``SFC64`` seeded by the id). Exactly
  independent draws, no table, but ~8 ns per element to rebuild: fine for small ``d``.

Both provide ``weighted_sums``, the reduction of the diagonal distributions' update, computed in
a single pass over the noise without materializing an ``(n, d)`` matrix for large ``d``. The
table also streams the low-rank update's two passes, ``project`` (``V^T z_k``) and ``combine``
(weighted sums of the ``z_k``); distributions fall back to dense row blocks for any other noise.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

NoiseKind = Literal["table", "generator"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

# Column block of the streaming update, in float32 elements (256 KiB: stays in L2 with its
# accumulators). Chosen by scripts/bench_noise.py.
BLOCK = 1 << 16
# Below this many elements (n * d) the update gathers the slices and uses one float64 matmul.
SMALL = 1 << 21
# Below this dimension the auto noise is the exact per-id generator; from it on, the shared
# table (its update is bandwidth-bound; the generator's is ~8 ns/element). scripts/bench_noise.py.
TABLE_MIN_DIM = 10_000
# ||z_k||^2 (isotropic update) comes from a float64 prefix over sums of squares of blocks of
# this many table entries (size / 2**12 + 1 values: 512 KiB for the largest default table, where
# a prefix per entry took 2 GiB) plus the partial blocks at the slice's ends (~2.5 ms per step
# for 500 pairs).
SQ_BLOCK = 1 << 12
# Largest table (entries) for which the separable update keeps a float32 table of its squares:
# 4 bytes per entry beyond the table, 256 MiB at most, the default tables up to d ~ 1.05e6.
# Above it each slice is squared in cache (same s2 bit for bit, no memory): with one BLAS
# thread the step takes 1.04x (d = 1e6) and 0.99x (d = 1e7) the time with the squares; with
# OpenBLAS's two threads on a loaded machine 1.1-2.5x. scripts/bench_noise.py.
SQUARES_MAX = 1 << 26


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer (Steele et al. 2014), vectorized; uint64 arithmetic wraps."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def perturbation_ids(seed: int, generation: int, indices: np.ndarray | int) -> np.ndarray:
    """Ids of the perturbations ``(seed, generation, index)``.

    Args:
        seed: run seed (``0 <= seed < 2**63``).
        generation: generation counter.
        indices: pair indices, or a count ``n`` meaning ``range(n)``.

    Returns:
        ``(n,)`` uint64 ids; a pure function of its arguments.
    """
    idx = np.arange(indices) if np.isscalar(indices) else np.asarray(indices)
    h = _splitmix64(np.full(idx.shape, seed, dtype=np.uint64))
    h = _splitmix64(h ^ np.uint64(generation))
    return _splitmix64(h ^ idx.astype(np.uint64))


@dataclass(frozen=True)
class NoiseSums:
    """The reductions of one update over pairs ``k``, each in one pass over the noise.

    ``s1 = sum_k a_k z_k`` (d,); ``s2 = sum_k b_k z_k**2`` (d,) or None;
    ``sq_norms[k] = ||z_k||^2`` (n,) or None.
    """

    s1: np.ndarray
    s2: np.ndarray | None
    sq_norms: np.ndarray | None


class Noise(Protocol):
    """What the strategy and the evaluators need from a noise source."""

    dim: int

    def get(self, pid: int) -> np.ndarray:
        """``z`` of one id: ``(dim,)`` float32, read-only."""
        ...

    def weighted_sums(
        self, ids: np.ndarray, a: np.ndarray, b: np.ndarray | None = None, sq_norms: bool = False
    ) -> NoiseSums:
        """``sum_k a_k z_k``, optionally ``sum_k b_k z_k**2`` and ``||z_k||^2``."""
        ...

    def spec(self) -> dict:
        """Plain-data description from which ``make_noise(**spec)`` rebuilds this source."""
        ...


def default_table_size(dim: int) -> int:
    """Table entries for a parameter count: 2**24 (64 MiB) up to 2**28 (1 GiB), >= 64 * dim."""
    return int(min(max(1 << 24, 64 * dim), 1 << 28))


_TABLES: weakref.WeakValueDictionary[tuple[int, int], np.ndarray] = weakref.WeakValueDictionary()
_TABLES_LOCK = threading.Lock()


def build_table(seed: int, size: int) -> np.ndarray:
    """The read-only float32 table; chunk ``c`` comes from its own stream ``(seed, c)``.

    One array per ``(seed, size)`` while anyone holds it (a driver that also builds an evaluator
    from the spec gets the same array, not a second GiB); freed with its last holder, so a
    process that drops its strategies does not keep their tables (1.4-3 s to rebuild 1 GiB).
    """
    key = (int(seed), int(size))
    with _TABLES_LOCK:
        table = _TABLES.get(key)
        if table is None:
            table = np.empty(size, dtype=np.float32)
            chunk = 1 << 22
            for c, start in enumerate(range(0, size, chunk)):
                ss = np.random.SeedSequence(seed, spawn_key=(c,))
                rng = np.random.Generator(np.random.SFC64(ss))
                rng.standard_normal(out=table[start : start + chunk], dtype=np.float32)
            table.flags.writeable = False
            _TABLES[key] = table
    return table


class NoiseTable:
    """``z`` of id ``p`` is ``table[p % (size - dim + 1) :][:dim]``.

    Args:
        dim: parameter count ``d``.
        seed: table seed (fixed per run config; independent of the run seed).
        size: table entries (``>= dim``); default ``default_table_size(dim)``.
        table: an existing table (e.g. read zero-copy from Ray's object store); must equal
            ``build_table(seed, size)``.

    Memory: the table (``4 * size`` bytes, shared with other holders of the same seed and
    size). The driver's update adds, on this object, ``8 * size / SQ_BLOCK`` bytes for
    ``||z_k||^2`` and ``4 * size`` for the separable squares if ``size <= SQUARES_MAX``.
    """

    kind: NoiseKind = "table"

    def __init__(
        self, dim: int, seed: int = 0, size: int | None = None, table: np.ndarray | None = None
    ):
        size = default_table_size(dim) if size is None else int(size)
        if size < dim:
            raise ValueError(f"noise table size {size} is smaller than the dimension {dim}")
        self.dim, self.seed, self.size = int(dim), int(seed), size
        self.table = build_table(self.seed, size) if table is None else table
        if self.table.shape != (size,) or self.table.dtype != np.float32:
            raise ValueError(f"noise table must be ({size},) float32, got {self.table.shape}")
        # Derived by the driver's update on first use (workers never build them), freed with
        # this object: the table's squares (separable, size <= SQUARES_MAX) and the float64
        # prefix over blocks of SQ_BLOCK squares (isotropic).
        self._squares: np.ndarray | None = None
        self._block_prefix: np.ndarray | None = None

    def spec(self) -> dict:
        return {"kind": "table", "dim": self.dim, "seed": self.seed, "size": self.size}

    def offsets(self, ids: np.ndarray) -> np.ndarray:
        return (np.asarray(ids, dtype=np.uint64) % np.uint64(self.size - self.dim + 1)).astype(
            np.int64
        )

    def get(self, pid: int) -> np.ndarray:
        o = int(self.offsets(np.array([pid]))[0])
        return self.table[o : o + self.dim]

    def weighted_sums(
        self, ids: np.ndarray, a: np.ndarray, b: np.ndarray | None = None, sq_norms: bool = False
    ) -> NoiseSums:
        offs = self.offsets(ids)
        if len(offs) * self.dim <= SMALL:
            z = self.table[offs[:, None] + np.arange(self.dim)]  # (n, d) float32, small
            return _sums_dense(z, a, b, sq_norms)
        return self._sums_streamed(offs, a, b, sq_norms)

    def _sums_streamed(
        self, offs: np.ndarray, a: np.ndarray, b: np.ndarray | None, sq_norms: bool
    ) -> NoiseSums:
        # One pass over column blocks: each slice is read from memory once, its square and
        # dot product are taken while it sits in cache. Pair order is fixed, so the float32
        # accumulation is deterministic.
        # sum_k b_k z_k^2 is a second saxpy per slice, over its squares: streamed from the table
        # of squares up to SQUARES_MAX, else squared in cache into `buf` (the same float32
        # values, so the same s2 bit for bit).
        from scipy.linalg import blas  # here: scipy costs ~0.2 s at import, most runs need none

        d, t = self.dim, self.table
        t2 = None if b is None else self.squares()
        buf = np.empty(min(BLOCK, d), dtype=np.float32) if b is not None and t2 is None else None
        s1 = np.zeros(d, dtype=np.float32)
        s2 = np.zeros(d, dtype=np.float32) if b is not None else None
        sq = self.sq_norms(offs) if sq_norms else None
        a32 = np.asarray(a, dtype=np.float32)
        b32 = None if b is None else np.asarray(b, dtype=np.float32)
        for j0 in range(0, d, BLOCK):
            j1 = min(j0 + BLOCK, d)
            y1 = s1[j0:j1]
            y2 = None if s2 is None else s2[j0:j1]
            for k, o in enumerate(offs):
                x = t[o + j0 : o + j1]
                blas.saxpy(x, y1, a=a32[k])
                if y2 is not None:
                    x2 = np.square(x, out=buf[: j1 - j0]) if t2 is None else t2[o + j0 : o + j1]
                    blas.saxpy(x2, y2, a=b32[k])
        return NoiseSums(s1.astype(np.float64), None if s2 is None else s2.astype(np.float64), sq)

    def project(self, ids: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(V^T y_k (n, k), ||y_k||^2 (n,))`` (float64), ``y_k`` the first ``m = len(V)``
        entries of ``z_k``: one pass over column blocks, each block of ``V^T`` (float32, ``k``
        rows) held in cache while every slice's block is read once and projected onto it
        (``k`` ``sdot``, accumulated over blocks in float64). The low-rank update's first
        pass."""
        offs = self.offsets(ids)
        m, k = v.shape
        if len(offs) * self.dim <= SMALL:
            y = self.table[offs[:, None] + np.arange(m)].astype(np.float64)
            return y @ v, np.einsum("ij,ij->i", y, y)
        from scipy.linalg import blas

        t = self.table
        vt = np.ascontiguousarray(v.T, dtype=np.float32)  # (k, m), rows contiguous
        q = np.zeros((len(offs), k))
        part = np.empty((len(offs), k), dtype=np.float32)
        for j0 in range(0, m, BLOCK):
            j1 = min(j0 + BLOCK, m)
            vbs = [vt[c, j0:j1] for c in range(k)]
            for i, o in enumerate(offs):
                x = t[o + j0 : o + j1]
                for c, vb in enumerate(vbs):  # k sdot: 1.5x faster than one sgemv at k = 2
                    part[i, c] = blas.sdot(x, vb)
            q += part
        return q, self.sq_norms(offs, m)

    def combine(self, ids: np.ndarray, w: np.ndarray, m: int) -> np.ndarray:
        """``sum_k w[k, c] y_k`` for each column ``c`` of ``w (n, M)``: ``(M, m)`` float64,
        ``y_k`` the first ``m`` entries of ``z_k``. One pass over column blocks, ``M`` float32
        ``saxpy`` per slice while it sits in cache (pair order fixed: deterministic). The
        low-rank update's second pass."""
        offs = self.offsets(ids)
        w = np.asarray(w, dtype=np.float64)
        if len(offs) * self.dim <= SMALL:
            return w.T @ self.table[offs[:, None] + np.arange(m)].astype(np.float64)
        from scipy.linalg import blas

        t = self.table
        out = np.zeros((w.shape[1], m), dtype=np.float32)
        w32 = w.astype(np.float32)
        for j0 in range(0, m, BLOCK):
            j1 = min(j0 + BLOCK, m)
            ys = [out[c, j0:j1] for c in range(w.shape[1])]
            for i, o in enumerate(offs):
                x = t[o + j0 : o + j1]
                for c, y in enumerate(ys):
                    blas.saxpy(x, y, a=w32[i, c])
        return out.astype(np.float64)

    def squares(self) -> np.ndarray | None:
        """``table ** 2`` (float32) if ``size <= SQUARES_MAX``, built once; else None."""
        if self._squares is None and self.size <= SQUARES_MAX:
            self._squares = np.square(self.table)
            self._squares.flags.writeable = False
        return self._squares

    def sq_norms(self, offs: np.ndarray, length: int | None = None) -> np.ndarray:
        """``||table[o : o + length]||^2`` (float64) of each offset (``length`` default
        ``dim``), O(SQ_BLOCK) per offset.

        ``Q(i) = sum_{j<i} table[j]^2 = P[i // B] + head(i)``, with ``P`` the float64 prefix over
        whole blocks of ``B = SQ_BLOCK`` entries and ``head(i)`` the squares of ``i``'s block
        before ``i``; ``||z||^2 = Q(o + dim) - Q(o)``. Float32 squares are exact in float64, so
        the error is the summation's: measured <= 9e-14 relative (d = 1e6, 1e7), against 4e-10
        for the float64 prefix of float32 squares per entry that this replaces.
        """
        if self._block_prefix is None:
            blocks = self.size // SQ_BLOCK
            sums = np.empty(blocks)
            step = (1 << 22) // SQ_BLOCK  # 32 MiB of float64 at a time
            for c0 in range(0, blocks, step):
                c1 = min(c0 + step, blocks)
                x = self.table[c0 * SQ_BLOCK : c1 * SQ_BLOCK].astype(np.float64)
                x = x.reshape(c1 - c0, SQ_BLOCK)
                sums[c0:c1] = np.einsum("ij,ij->i", x, x)
            self._block_prefix = np.zeros(blocks + 1)
            np.cumsum(sums, out=self._block_prefix[1:])
            self._block_prefix.flags.writeable = False
        offs = np.asarray(offs, dtype=np.int64)
        ends = offs + (self.dim if length is None else int(length))
        p = self._block_prefix
        return (p[ends // SQ_BLOCK] - p[offs // SQ_BLOCK]) + (self._heads(ends) - self._heads(offs))

    def _heads(self, pos: np.ndarray) -> np.ndarray:
        """``sum(table[i - i % SQ_BLOCK : i] ** 2)`` (float64) of each position ``i``."""
        out = np.empty(len(pos))
        for k, i in enumerate(pos.tolist()):
            x = self.table[i - i % SQ_BLOCK : i].astype(np.float64)
            out[k] = x @ x
        return out


class NoiseGenerator:
    """``z`` of id ``p`` is ``SFC64(p).standard_normal(dim, float32)``: exact, no table."""

    kind: NoiseKind = "generator"

    def __init__(self, dim: int, seed: int = 0):
        self.dim, self.seed = int(dim), int(seed)
        # The driver rebuilds each z twice (candidates, then update): keep recent ones,
        # up to 16 MiB.
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = max(4, (1 << 22) // self.dim)

    def spec(self) -> dict:
        return {"kind": "generator", "dim": self.dim, "seed": self.seed}

    def get(self, pid: int) -> np.ndarray:
        pid = int(pid)
        z = self._cache.get(pid)
        if z is None:
            key = (pid ^ self.seed) & 0xFFFFFFFFFFFFFFFF
            z = np.random.Generator(np.random.SFC64(key)).standard_normal(self.dim, np.float32)
            z.flags.writeable = False
            self._cache[pid] = z
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return z

    def weighted_sums(
        self, ids: np.ndarray, a: np.ndarray, b: np.ndarray | None = None, sq_norms: bool = False
    ) -> NoiseSums:
        rows = max(1, SMALL // max(self.dim, 1))
        parts = []
        for k0 in range(0, len(ids), rows):  # (rows, d) at a time, never (n, d) for large d
            z = np.stack([self.get(p) for p in ids[k0 : k0 + rows]])
            parts.append(
                _sums_dense(
                    z, a[k0 : k0 + rows], None if b is None else b[k0 : k0 + rows], sq_norms
                )
            )
        s2 = None if b is None else np.sum([p.s2 for p in parts], axis=0)
        sq = np.concatenate([p.sq_norms for p in parts]) if sq_norms else None
        return NoiseSums(np.sum([p.s1 for p in parts], axis=0), s2, sq)


class ArrayNoise:
    """Explicit noise rows; the id of row ``i`` is ``i``. For samples that no id names (a
    previous generation's candidate placed in the current distribution's frame by
    ``Distribution.whiten``), so the distributions' ``gradients`` apply to them unchanged."""

    kind = "array"

    def __init__(self, rows: np.ndarray):
        self.rows = np.asarray(rows, dtype=np.float64)
        self.dim = int(self.rows.shape[1])

    def spec(self) -> dict:
        raise TypeError("ArrayNoise holds explicit rows and is not rebuilt from a spec")

    def get(self, pid: int) -> np.ndarray:
        return self.rows[int(pid)]

    def weighted_sums(
        self, ids: np.ndarray, a: np.ndarray, b: np.ndarray | None = None, sq_norms: bool = False
    ) -> NoiseSums:
        return _sums_dense(self.rows[np.asarray(ids, dtype=np.int64)], a, b, sq_norms)


def _sums_dense(z: np.ndarray, a: np.ndarray, b: np.ndarray | None, sq_norms: bool) -> NoiseSums:
    """The reductions over an in-memory ``(n, d)`` float32 block, accumulated in float64."""
    z64 = z.astype(np.float64)
    s1 = np.asarray(a, dtype=np.float64) @ z64
    s2 = None if b is None else np.asarray(b, dtype=np.float64) @ (z64 * z64)
    sq = np.einsum("ij,ij->i", z64, z64) if sq_norms else None
    return NoiseSums(s1, s2, sq)


def make_noise(
    kind: NoiseKind | Literal["auto"], dim: int, seed: int = 0, size: int | None = None
) -> Noise:
    """Build a noise source from its ``spec()``; ``auto`` picks by ``dim`` (``TABLE_MIN_DIM``)."""
    if kind == "auto":
        kind = "table" if dim >= TABLE_MIN_DIM else "generator"
    if kind == "table":
        return NoiseTable(dim, seed=seed, size=size)
    if kind == "generator":
        return NoiseGenerator(dim, seed=seed)
    raise ValueError(f"noise kind must be 'auto', 'table' or 'generator', got {kind!r}")
