"""Dense AO matrices <-> padded on-site and off-site blocks (numpy or torch).

A dense matrix in PySCF AO order is cut into

* ``onsite``  (..., natm, P, P): atom a's diagonal block, and
* ``offsite`` (..., npair, P, P): the block between atoms ``pairs[0, k]`` (rows)
  and ``pairs[1, k]`` (columns),

each in e3nn order, padded to the ``P`` slots of the model's
:class:`~pyscf_qhflow.aolayout.BasisLayout` (zeros in the padding).  Where the
AOs go is decided by :class:`~pyscf_qhflow.aolayout.MolLayout` alone.
Assembling writes the blocks back; pairs that are not listed stay zero.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # keeps this module free of pyscf, so nn/ may use it
    from .aolayout import MolLayout

__all__ = ["split_blocks", "assemble_blocks", "symmetrize_blocks", "all_pairs",
           "reverse_pair_index"]


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def all_pairs(natm: int) -> np.ndarray:
    """Every ordered pair (i, j), i != j, shape (2, natm*(natm-1))."""
    i, j = np.nonzero(~np.eye(natm, dtype=bool))
    return np.stack([i, j])


def _gather_index(layout: MolLayout, rows: np.ndarray, cols: np.ndarray):
    """Row/column AO indices (with -1 -> nao dump slot) for blocks of atom rows x cols."""
    idx = np.where(layout.ao_index >= 0, layout.ao_index, layout.nao)
    return idx[rows][:, :, None], idx[cols][:, None, :]


def split_blocks(matrix, layout: MolLayout, pairs: np.ndarray | None = None):
    """Cut a (..., nao, nao) PySCF-order matrix into padded e3nn-order blocks.

    Returns ``(onsite, offsite)`` of shapes (..., natm, P, P) and
    (..., npair, P, P); ``pairs`` defaults to :func:`all_pairs`.
    """
    if pairs is None:
        pairs = all_pairs(layout.natm)
    pairs = np.asarray(pairs)
    nao = layout.nao
    if matrix.shape[-2:] != (nao, nao):
        raise ValueError(f"matrix shape {tuple(matrix.shape)} does not match nao={nao}")
    # pad with a zero row and column at index nao so padding slots gather zeros
    if _is_torch(matrix):
        import torch
        padded = torch.nn.functional.pad(matrix, (0, 1, 0, 1))
    else:
        widths = [(0, 0)] * (matrix.ndim - 2) + [(0, 1), (0, 1)]
        padded = np.pad(matrix, widths)
    atoms = np.arange(layout.natm)
    r, c = _gather_index(layout, atoms, atoms)
    onsite = padded[..., r, c]
    r, c = _gather_index(layout, pairs[0], pairs[1])
    offsite = padded[..., r, c]
    return onsite, offsite


def assemble_blocks(onsite, offsite, layout: MolLayout, pairs: np.ndarray | None = None):
    """Inverse of :func:`split_blocks`: padded blocks -> dense PySCF-order matrix.

    Padding entries are discarded.  Differentiable for torch inputs.
    """
    if pairs is None:
        pairs = all_pairs(layout.natm)
    pairs = np.asarray(pairs)
    nao = layout.nao
    batch = tuple(onsite.shape[:-3])
    atoms = np.arange(layout.natm)
    r_on, c_on = _gather_index(layout, atoms, atoms)
    r_off, c_off = _gather_index(layout, pairs[0], pairs[1])
    if _is_torch(onsite):
        import torch
        out = onsite.new_zeros(batch + (nao + 1, nao + 1))
        out[..., torch.as_tensor(r_on), torch.as_tensor(c_on)] = onsite
        if pairs.shape[1]:
            out[..., torch.as_tensor(r_off), torch.as_tensor(c_off)] = offsite
    else:
        out = np.zeros(batch + (nao + 1, nao + 1), dtype=np.result_type(onsite, offsite))
        out[..., r_on, c_on] = onsite
        if pairs.shape[1]:
            out[..., r_off, c_off] = offsite
    # the dump row/column collected every padding entry
    return out[..., :nao, :nao]


def reverse_pair_index(pairs):
    """For every pair k = (i, j), the index of (j, i) in ``pairs`` [2, K] (found by lookup).

    numpy or torch (stays on the tensor's device).  Raises ``ValueError`` when
    some reverse pair is missing.
    """
    if _is_torch(pairs):
        import torch
        k = pairs.shape[1]
        if k == 0:
            return pairs.new_zeros(0)
        n = int(pairs.max()) + 1
        key, rkey = pairs[0] * n + pairs[1], pairs[1] * n + pairs[0]
        skey, order = torch.sort(key)
        rev = order[torch.searchsorted(skey, rkey).clamp(max=k - 1)]
        found = torch.equal(key[rev], rkey)
    else:
        pairs = np.asarray(pairs)
        k = pairs.shape[1]
        if k == 0:
            return np.zeros(0, dtype=np.int64)
        n = int(pairs.max()) + 1
        key, rkey = pairs[0] * n + pairs[1], pairs[1] * n + pairs[0]
        order = np.argsort(key)
        rev = order[np.clip(np.searchsorted(key[order], rkey), 0, k - 1)]
        found = np.array_equal(key[rev], rkey)
    if not found:
        raise ValueError("pair list is not closed under reversal (i, j) -> (j, i)")
    return rev


def symmetrize_blocks(onsite, offsite, pairs, rev=None):
    """Make the assembled matrix exactly symmetric (numpy or torch).

    On-site ``(B + B^T)/2``; off-site ``(B_ij + B_ji^T)/2`` with the reverse
    pair found by index (pass ``rev`` to reuse a lookup).
    """
    if rev is None:
        rev = reverse_pair_index(pairs)
    onsite = 0.5 * (onsite + onsite.swapaxes(-1, -2))  # [..., N, P, P]
    offsite = 0.5 * (offsite + offsite[..., rev, :, :].swapaxes(-1, -2))  # [..., K, P, P]
    return onsite, offsite
