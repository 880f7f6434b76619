"""In-process vector search over one tenant's embeddings: exact (numpy) while small, HNSW (usearch) beyond.

Vectors are L2-normalised, so cosine similarity is a dot product. Exact search is one matrix-vector product;
`bench/memory.py` measures where it stops meeting the latency target and sets `EXACT_LIMIT`. Beyond it, a
usearch HNSW index (when installed) answers; without usearch the exact path keeps working, only slower.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Live vectors up to which exact search is used (measured in bench/memory.py: 384-d exact search takes
#: ~1 ms per 10k vectors on one core, so 50k keeps it near 5 ms; HNSW takes over past that).
EXACT_LIMIT = 50_000


def normalize(mat: np.ndarray) -> np.ndarray:
    mat = np.asarray(mat, dtype=np.float32)
    if mat.ndim == 1:
        n = float(np.linalg.norm(mat))
        return mat / n if n > 0 else mat
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return mat / norms


class VectorIndex:
    """Slot-addressed vectors (slots are the tenant index's case slots); a slot can be replaced or removed."""

    def __init__(self, dims: int, exact_limit: int = EXACT_LIMIT) -> None:
        self.dims = dims
        self.exact_limit = exact_limit
        self._mat = np.zeros((0, dims), dtype=np.float32)
        self._has = np.zeros(0, dtype=bool)
        self._count = 0
        self._ann: Any = None  # usearch.index.Index once built

    def __len__(self) -> int:
        return self._count

    def _grow(self, slot: int) -> None:
        if slot < self._mat.shape[0]:
            return
        cap = max(1024, self._mat.shape[0] * 2, slot + 1)
        mat = np.zeros((cap, self.dims), dtype=np.float32)
        mat[: self._mat.shape[0]] = self._mat
        has = np.zeros(cap, dtype=bool)
        has[: self._has.shape[0]] = self._has
        self._mat, self._has = mat, has

    def add(self, slots: list[int], vectors: np.ndarray) -> None:
        vectors = normalize(np.asarray(vectors, dtype=np.float32).reshape(len(slots), self.dims))
        self._grow(max(slots))
        idx = np.asarray(slots, dtype=np.int64)
        self._count += int((~self._has[idx]).sum())
        self._mat[idx] = vectors
        self._has[idx] = True
        if self._ann is not None:
            for s in slots:
                if self._ann.contains(s):
                    self._ann.remove(s)
            self._ann.add(idx, vectors)
        elif self._count > self.exact_limit:
            self._build_ann()

    def remove(self, slot: int) -> None:
        if slot < self._has.shape[0] and self._has[slot]:
            self._has[slot] = False
            self._count -= 1
            if self._ann is not None and self._ann.contains(slot):
                self._ann.remove(slot)

    def get(self, slot: int) -> np.ndarray | None:
        if slot < self._has.shape[0] and self._has[slot]:
            return self._mat[slot]
        return None

    def similarity(self, query: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Cosine of `query` with each slot, one value per slot given (0 for slots without a vector, those
        past the matrix's capacity included: cases newer than every vector)."""
        out = np.zeros(slots.shape[0], dtype=np.float32)
        if slots.size:
            held = slots < self._has.shape[0]
            held[held] = self._has[slots[held]]
            out[held] = self._mat[slots[held]] @ query
        return out

    def _build_ann(self) -> None:
        try:
            from usearch.index import Index
        except ImportError:  # exact search still answers, just slower
            self.exact_limit = 1 << 62
            return
        ann = Index(ndim=self.dims, metric="cos", dtype="f32", connectivity=16, expansion_add=128, expansion_search=64)
        slots = np.flatnonzero(self._has)
        if slots.size:
            ann.add(slots.astype(np.uint64), self._mat[slots])
        self._ann = ann

    @property
    def uses_ann(self) -> bool:
        return self._ann is not None

    def search(self, query: np.ndarray, n: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The `n` nearest slots (and their cosine), optionally only among slots where `mask` is True."""
        if self._count == 0 or n <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        query = normalize(query)
        if self._ann is not None:
            want = n if mask is None else min(self._count, n * 4)
            res = self._ann.search(query, want)
            keys = np.asarray(res.keys, dtype=np.int64)
            sims = 1.0 - np.asarray(res.distances, dtype=np.float32)
            if mask is not None:
                keep = (keys < mask.shape[0]) & mask[np.minimum(keys, mask.shape[0] - 1)]
                if keep.sum() < min(n, int(mask[: self._has.shape[0]][self._has[: mask.shape[0]]].sum())):
                    return self._exact(query, n, mask)  # a selective filter: the exact scan is the honest answer
                keys, sims = keys[keep], sims[keep]
            return keys[:n], sims[:n]
        return self._exact(query, n, mask)

    def _exact(self, query: np.ndarray, n: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        size = self._has.shape[0]
        sims = self._mat @ query
        valid = self._has.copy()
        if mask is not None:
            m = np.zeros(size, dtype=bool)
            k = min(size, mask.shape[0])
            m[:k] = mask[:k]
            valid &= m
        sims = np.where(valid, sims, -np.inf)
        n = min(n, int(valid.sum()))
        if n <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        top = np.argpartition(-sims, n - 1)[:n]
        top = top[np.argsort(-sims[top], kind="stable")]
        return top.astype(np.int64), sims[top].astype(np.float32)
