"""Train/validation/test splits, decided per molecule by a hash of its QM9 index.

A molecule's split depends only on its key (``"qm9:<index>"``, or a digest of
its geometry when it has no QM9 index) and a seed, never on which shards are
loaded: adding shards never moves a molecule, duplicates share a split, and
new molecules can be labelled for a chosen split (:func:`split_of_key`).
Needs numpy only; the data set is anything with ``len``, ``qm9_index`` and
``geometry(i)``, such as :class:`~pyscf_qhflow.data.dataset.ShardDataset`.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .dataset import ShardDataset

__all__ = ["SPLIT_NAMES", "split_by_qm9_index", "split_indices", "split_of_key"]

SPLIT_NAMES = ("train", "val", "test")


def _split_key(dataset: ShardDataset, i: int) -> str:
    q = int(dataset.qm9_index[i])
    if q >= 0:
        return f"qm9:{q}"
    Z, pos = dataset.geometry(i)  # not from QM9: hash the geometry (rounded to 1e-6 A)
    digest = hashlib.sha1(Z.tobytes() + np.round(pos, 6).tobytes()).hexdigest()
    return f"geom:{digest}"


def split_by_qm9_index(dataset: ShardDataset, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic (train, val, test) record indices by hashing each molecule's QM9 index.

    Molecule ``q`` goes to the split whose cumulative fraction first exceeds
    ``u = blake2b(f"{seed}:qm9:{q}") / 2**64`` in [0, 1), so its split depends only
    on its QM9 index and ``seed``: adding shards never moves a molecule, and
    duplicates of a molecule share a split.  Records without a QM9 index (-1)
    are hashed by their geometry instead.  Split sizes follow ``fractions``
    only on average.
    """
    bounds = _split_bounds(fractions)
    bucket = np.array([_bucket(_split_key(dataset, i), bounds, seed)
                       for i in range(len(dataset))], dtype=np.int64)
    return tuple(np.flatnonzero(bucket == b) for b in range(3))


def split_indices(dataset: ShardDataset, split: str, limit: int | None = None,
                  seed: int = 0) -> list[int]:
    """Record indices of one split of :func:`split_by_qm9_index` (or ``'all'``), the first ``limit``."""
    if split == "all":
        idx = list(range(len(dataset)))
    elif split in SPLIT_NAMES:
        idx = [int(i) for i in split_by_qm9_index(dataset, seed=seed)[SPLIT_NAMES.index(split)]]
    else:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLIT_NAMES + ('all',)}")
    return idx[:limit] if limit else idx


def _split_bounds(fractions: Sequence[float]) -> np.ndarray:
    """Checked fractions -> the two cumulative bounds (train | val | test) in [0, 1]."""
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or np.any(fr < 0) or abs(fr.sum() - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, "
                         f"got {tuple(fractions)}")
    return np.cumsum(fr)[:2]


def _bucket(key: str, bounds: np.ndarray, seed: int) -> int:
    h = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8)
    u = int.from_bytes(h.digest(), "little") / 2.0**64
    return int(np.searchsorted(bounds, u, side="right"))


def split_of_key(key: str, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> int:
    """Split (0 train, 1 val, 2 test) of one molecule key, e.g. ``"qm9:123"``.

    The rule behind :func:`split_by_qm9_index`; exposed so that new molecules
    can be labelled for a chosen split (``qhflow label --qm9-split test``).
    """
    return _bucket(key, _split_bounds(fractions), seed)
