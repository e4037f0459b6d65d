"""Molecule records -> model batch, and predicted blocks -> dense Fock matrices.

A record (see :mod:`pyscf_qhflow.keys`) holds dense PySCF-order matrices.  The
network works on padded e3nn-order blocks, so each record is cut once into a
:class:`MolBlocks` (cheap to keep in memory, reused every training step) and
several of those are concatenated by :func:`collate` into one model batch:

* atoms of molecule b are rows ``atom_offset[b] : atom_offset[b] + natm_b``;
* ``edge_index`` (backbone graph, ``cutoff``) and ``pair_index`` (off-site
  blocks, ``pair_cutoff``) are two independent radius lists, both in Angstrom,
  both within each molecule, offset to batch atom indices;
* :class:`BatchInfo` keeps per-molecule layouts and pair slices, so
  :func:`unbatch_fock` puts predicted blocks back into dense PySCF-order
  matrices with :func:`~pyscf_qhflow.blocks.assemble_blocks`.

Off-site blocks of pairs farther apart than ``pair_cutoff`` are not in the
batch; assembled matrices hold zeros there.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import keys
from .aolayout import BasisLayout, MolLayout
from .blocks import assemble_blocks, split_blocks
from .geometry import radius_pairs

__all__ = ["MolBlocks", "BatchInfo", "prepare_record", "collate", "make_batch",
           "unbatch_fock", "block_masks"]


@dataclass(frozen=True)
class MolBlocks:
    """One molecule cut into padded e3nn-order blocks (numpy, float64).

    ``pairs`` and ``edges`` are local atom indices, shapes (2, K) and (2, E).
    ``fock_onsite``/``fock_offsite`` are None without a ``fock`` in the record.
    ``extras`` carries optional dense data (e.g. for the eigenvalue loss).
    """

    layout: MolLayout
    pos: np.ndarray  # (natm, 3) Angstrom
    edges: np.ndarray  # (2, E)
    pairs: np.ndarray  # (2, K)
    hinit_onsite: np.ndarray  # (natm, P, P) Hartree
    hinit_offsite: np.ndarray  # (K, P, P)
    overlap_onsite: np.ndarray  # (natm, P, P)
    fock_onsite: np.ndarray | None = None  # (natm, P, P)
    fock_offsite: np.ndarray | None = None  # (K, P, P)

    @property
    def natm(self) -> int:
        return self.layout.natm


@dataclass(frozen=True)
class BatchInfo:
    """What :func:`unbatch_fock` needs to put a batch's blocks back together."""

    layouts: tuple[MolLayout, ...]
    pairs: tuple[np.ndarray, ...]  # local (2, K_b) pair list of each molecule
    atom_slices: tuple[slice, ...]
    pair_slices: tuple[slice, ...]

    @property
    def num_molecules(self) -> int:
        return len(self.layouts)


def _local_pairs(pos: np.ndarray, cutoff: float) -> np.ndarray:
    """Ordered (i, j), i != j, |r_i - r_j| < cutoff Angstrom, local indices, (2, K)."""
    p = torch.as_tensor(pos, dtype=torch.float64)
    return radius_pairs(p, torch.zeros(len(p), dtype=torch.long), cutoff).numpy()


def prepare_record(record: dict, basis_layout: BasisLayout, cutoff: float,
                   pair_cutoff: float) -> MolBlocks:
    """Cut one record's dense matrices into blocks (done once per molecule).

    ``record`` needs ``Z``, ``pos`` (Angstrom), ``hinit`` and ``overlap``
    (dense, PySCF order); ``fock`` is optional (training targets).
    """
    for key in (keys.Z, keys.POS, keys.HINIT, keys.OVERLAP):
        if key not in record:
            raise KeyError(f"record has no {key!r} (has {sorted(record)})")
    z = np.asarray(record[keys.Z], dtype=np.int64)
    pos = np.asarray(record[keys.POS], dtype=np.float64).reshape(-1, 3)
    if len(z) != len(pos):
        raise ValueError(f"record has {len(z)} atomic numbers but {len(pos)} positions")
    layout = MolLayout.from_atomic_numbers(z, basis_layout)
    edges = _local_pairs(pos, cutoff)
    pairs = _local_pairs(pos, pair_cutoff)
    h_on, h_off = split_blocks(np.asarray(record[keys.HINIT], dtype=np.float64), layout, pairs)
    s_on, _ = split_blocks(np.asarray(record[keys.OVERLAP], dtype=np.float64), layout,
                           pairs[:, :0])
    f_on = f_off = None
    if record.get(keys.FOCK) is not None:
        f_on, f_off = split_blocks(np.asarray(record[keys.FOCK], dtype=np.float64), layout,
                                   pairs)
    return MolBlocks(layout, pos, edges, pairs, h_on, h_off, s_on, f_on, f_off)


def collate(mols: list[MolBlocks], dtype: torch.dtype = torch.float32,
            device: torch.device | str | None = None) -> tuple[dict, BatchInfo]:
    """Concatenate prepared molecules into one model batch (keys of :mod:`~pyscf_qhflow.keys`).

    The flow fields ``xt_onsite``, ``xt_offsite`` and ``t`` are set to zero;
    the caller (training step or sampler) overwrites them.  Target blocks
    (``fock_*`` and ``residual_*``) are included only when every molecule has them.
    """
    if not mols:
        raise ValueError("collate needs at least one molecule")
    natm = np.array([m.natm for m in mols])
    npair = np.array([m.pairs.shape[1] for m in mols])
    atom_off = np.concatenate([[0], np.cumsum(natm)])
    pair_off = np.concatenate([[0], np.cumsum(npair)])

    def cat(arrays, dt=dtype):
        return torch.as_tensor(np.concatenate(arrays), dtype=dt, device=device)

    batch = {
        keys.Z: cat([m.layout.atomic_numbers for m in mols], torch.long),
        keys.POS: cat([m.pos for m in mols]),  # [N, 3] Angstrom
        keys.BATCH: cat([np.full(n, b) for b, n in enumerate(natm)], torch.long),
        keys.EDGE_INDEX: torch.as_tensor(np.concatenate(
            [m.edges + atom_off[b] for b, m in enumerate(mols)], axis=1),
            dtype=torch.long, device=device),  # [2, E]
        keys.PAIR_INDEX: torch.as_tensor(np.concatenate(
            [m.pairs + atom_off[b] for b, m in enumerate(mols)], axis=1),
            dtype=torch.long, device=device),  # [2, K]
        keys.SLOT_MASK: cat([m.layout.mask for m in mols], torch.bool),  # [N, P]
        keys.HINIT_ONSITE: cat([m.hinit_onsite for m in mols]),  # [N, P, P]
        keys.HINIT_OFFSITE: cat([m.hinit_offsite for m in mols]),  # [K, P, P]
        keys.OVERLAP_ONSITE: cat([m.overlap_onsite for m in mols]),  # [N, P, P]
    }
    if all(m.fock_onsite is not None for m in mols):
        batch[keys.FOCK_ONSITE] = cat([m.fock_onsite for m in mols])
        batch[keys.FOCK_OFFSITE] = cat([m.fock_offsite for m in mols])
        # subtract before the cast: core entries are ~20 Ha, float32 would lose ~1e-6 Ha
        batch[keys.RESIDUAL_ONSITE] = cat([m.fock_onsite - m.hinit_onsite for m in mols])
        batch[keys.RESIDUAL_OFFSITE] = cat([m.fock_offsite - m.hinit_offsite for m in mols])
    batch[keys.XT_ONSITE] = torch.zeros_like(batch[keys.HINIT_ONSITE])
    batch[keys.XT_OFFSITE] = torch.zeros_like(batch[keys.HINIT_OFFSITE])
    batch[keys.T] = torch.zeros(len(mols), dtype=dtype, device=device)  # [B]
    info = BatchInfo(
        layouts=tuple(m.layout for m in mols),
        pairs=tuple(m.pairs for m in mols),
        atom_slices=tuple(slice(int(atom_off[b]), int(atom_off[b + 1]))
                          for b in range(len(mols))),
        pair_slices=tuple(slice(int(pair_off[b]), int(pair_off[b + 1]))
                          for b in range(len(mols))))
    return batch, info


def make_batch(records: list[dict], basis_layout: BasisLayout, cutoff: float,
               pair_cutoff: float, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> tuple[dict, BatchInfo]:
    """Records (dense PySCF-order matrices) -> ``(model batch, BatchInfo)``.

    ``cutoff`` (backbone edges) and ``pair_cutoff`` (off-site blocks) in Angstrom.
    """
    mols = [prepare_record(r, basis_layout, cutoff, pair_cutoff) for r in records]
    return collate(mols, dtype, device)


def unbatch_fock(onsite, offsite, info: BatchInfo) -> list[np.ndarray]:
    """Batched blocks (onsite [N, P, P], offsite [K, P, P]) -> dense PySCF-order
    float64 matrices, one per molecule.  Pairs outside the pair list stay zero."""
    if isinstance(onsite, torch.Tensor):
        onsite = onsite.detach().to("cpu", torch.float64).numpy()
        offsite = offsite.detach().to("cpu", torch.float64).numpy()
    out = []
    for layout, pairs, sa, sp in zip(info.layouts, info.pairs, info.atom_slices,
                                     info.pair_slices):
        out.append(assemble_blocks(np.asarray(onsite[sa], np.float64),
                                   np.asarray(offsite[sp], np.float64), layout, pairs))
    return out


def block_masks(slot_mask: torch.Tensor, pair_index: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Which entries of the padded blocks are real matrix elements.

    Returns (onsite [N, P, P], offsite [K, P, P]) boolean masks.
    """
    on = slot_mask[:, :, None] & slot_mask[:, None, :]  # [N, P, P]
    off = slot_mask[pair_index[0], :, None] & slot_mask[pair_index[1], None, :]  # [K, P, P]
    return on, off
