"""Reusable symmetry checks for block-valued models (batch -> (onsite, offsite)).

A model maps a batch (see :mod:`pyscf_qhflow.keys`) to padded e3nn-order
blocks.  For an orthogonal R (PySCF frame; rotations and reflections) every
block transforms as ``B' = D_i B D_j^T`` with ``D = irreps_wigner_D(irreps_block,
rotation_to_e3nn(R))``, positions as ``r' = r R^T``.  The helpers here
transform inputs exactly, compare outputs, and build random test batches
with plain torch (only the BasisLayout comes from PySCF).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from pyscf_qhflow import keys
from pyscf_qhflow.aolayout import BasisLayout, MolLayout, rotation_to_e3nn
from pyscf_qhflow.blocks import reverse_pair_index
from pyscf_qhflow.geometry import radius_pairs
from pyscf_qhflow.nn.so3 import irreps_wigner_D

Model = Callable[[dict], tuple[torch.Tensor, torch.Tensor]]

ONSITE_KEYS = (keys.HINIT_ONSITE, keys.OVERLAP_ONSITE, keys.XT_ONSITE, keys.FOCK_ONSITE)
OFFSITE_KEYS = (keys.HINIT_OFFSITE, keys.XT_OFFSITE, keys.FOCK_OFFSITE)


# ---------------------------------------------------------------- batches
def _random_symmetric_blocks(gen, mask, pair_index, scale):
    n, p = mask.shape
    m = mask.to(torch.float64)
    a = torch.randn(n, p, p, generator=gen, dtype=torch.float64) * scale
    onsite = (a + a.transpose(1, 2)) * m[:, :, None] * m[:, None, :]
    k = pair_index.shape[1]
    b = torch.randn(k, p, p, generator=gen, dtype=torch.float64) * scale
    rev = torch.as_tensor(reverse_pair_index(pair_index.numpy())) if k else torch.zeros(0, dtype=torch.long)
    b = 0.5 * (b + b[rev].transpose(1, 2)) if k else b
    offsite = b * m[pair_index[0]][:, :, None] * m[pair_index[1]][:, None, :]
    return onsite, offsite


def make_batch(atomic_numbers_list, basis_layout: BasisLayout, cutoff: float,
               pair_cutoff: float, seed: int = 0, box: float = 3.0) -> dict:
    """Random molecules (positions in a box, Angstrom, >= 0.9 A apart) as one model batch."""
    gen = torch.Generator().manual_seed(seed)
    pos, zs, bvec, masks = [], [], [], []
    for b, znum in enumerate(atomic_numbers_list):
        n = len(znum)
        while True:
            p = (torch.rand(n, 3, generator=gen, dtype=torch.float64) - 0.5) * box
            d = torch.cdist(p, p) + 10 * torch.eye(n, dtype=torch.float64)
            if d.min() > 0.9:
                break
        pos.append(p + 20.0 * b)  # molecules far apart
        zs.append(torch.as_tensor(znum, dtype=torch.long))
        bvec.append(torch.full((n,), b, dtype=torch.long))
        masks.append(torch.as_tensor(MolLayout.from_atomic_numbers(znum, basis_layout).mask))
    pos, z, bvec, mask = torch.cat(pos), torch.cat(zs), torch.cat(bvec), torch.cat(masks)
    edge_index = radius_pairs(pos, bvec, cutoff)
    pair_index = radius_pairs(pos, bvec, pair_cutoff)
    batch = {keys.Z: z, keys.POS: pos, keys.BATCH: bvec, keys.EDGE_INDEX: edge_index,
             keys.PAIR_INDEX: pair_index, keys.SLOT_MASK: mask,
             keys.T: torch.rand(len(atomic_numbers_list), generator=gen, dtype=torch.float64)}
    for on, off, scale in ((keys.HINIT_ONSITE, keys.HINIT_OFFSITE, 1.0),
                           (keys.XT_ONSITE, keys.XT_OFFSITE, 0.01)):
        batch[on], batch[off] = _random_symmetric_blocks(gen, mask, pair_index, scale)
    s_on, _ = _random_symmetric_blocks(gen, mask, pair_index, 0.3)
    batch[keys.OVERLAP_ONSITE] = s_on
    return batch


def concat_batches(batches: list[dict]) -> dict:
    """Concatenate single-molecule batches (atom indices and molecule ids shifted)."""
    out: dict = {}
    n_off, b_off = 0, 0
    parts: dict[str, list] = {k: [] for k in batches[0]}
    for b in batches:
        n = b[keys.Z].shape[0]
        for k, v in b.items():
            if k in (keys.EDGE_INDEX, keys.PAIR_INDEX):
                v = v + n_off
            elif k == keys.BATCH:
                v = v + b_off
            parts[k].append(v)
        n_off += n
        b_off += int(b[keys.BATCH].max()) + 1
    for k, v in parts.items():
        out[k] = torch.cat(v, dim=1 if k in (keys.EDGE_INDEX, keys.PAIR_INDEX) else 0)
    return out


def select_molecule(batch: dict, mol: int) -> dict:
    """One molecule of a batch as its own batch."""
    atoms = torch.nonzero(batch[keys.BATCH] == mol).flatten()
    new = torch.full((batch[keys.Z].shape[0],), -1, dtype=torch.long)
    new[atoms] = torch.arange(len(atoms))
    out = {}
    for k, v in batch.items():
        if k in (keys.EDGE_INDEX, keys.PAIR_INDEX):
            keep = batch[keys.BATCH][v[0]] == mol
            out[k] = new[v[:, keep]]
        elif k in OFFSITE_KEYS:
            keep = batch[keys.BATCH][batch[keys.PAIR_INDEX][0]] == mol
            out[k] = v[keep]
        elif k == keys.T:
            out[k] = v[mol:mol + 1]
        elif k == keys.BATCH:
            out[k] = torch.zeros(len(atoms), dtype=torch.long)
        else:
            out[k] = v[atoms]
    return out


# ---------------------------------------------------------------- transforms
def random_orthogonal(seed: int, reflect: bool) -> np.ndarray:
    """A random 3x3 rotation (det +1) or rotation-reflection (det -1), float64."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q


def transform_batch(batch: dict, rotation: np.ndarray, irreps_block: str) -> dict:
    """Rotate/reflect positions (PySCF frame) and every block input: B' = D_i B D_j^T."""
    rot = torch.as_tensor(rotation, dtype=torch.float64)
    d = irreps_wigner_D(irreps_block, torch.as_tensor(rotation_to_e3nn(np.asarray(rotation))))
    out = dict(batch)
    out[keys.POS] = batch[keys.POS].to(torch.float64) @ rot.T
    for k in ONSITE_KEYS + OFFSITE_KEYS:
        if k in batch:
            v = batch[k]
            out[k] = (d.to(v.dtype) @ v @ d.to(v.dtype).T)
    return out


def transform_blocks(onsite, offsite, rotation: np.ndarray, irreps_block: str):
    d = irreps_wigner_D(irreps_block, torch.as_tensor(rotation_to_e3nn(np.asarray(rotation))))
    d = d.to(onsite.dtype)
    return d @ onsite @ d.T, d @ offsite @ d.T


def permute_batch(batch: dict, seed: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Random atom permutation and random reordering of edges and pairs.

    Returns (batch', atom_perm, pair_perm) with ``onsite'[a] = onsite[atom_perm[a]]``
    and ``offsite'[q] = offsite[pair_perm[q]]``.
    """
    gen = torch.Generator().manual_seed(seed)
    n = batch[keys.Z].shape[0]
    perm = torch.randperm(n, generator=gen)  # new atom a is old atom perm[a]
    inv = torch.argsort(perm)  # old atom -> new index
    kp = torch.randperm(batch[keys.PAIR_INDEX].shape[1], generator=gen)
    ke = torch.randperm(batch[keys.EDGE_INDEX].shape[1], generator=gen)
    out = {}
    for k, v in batch.items():
        if k == keys.PAIR_INDEX:
            out[k] = inv[v[:, kp]]
        elif k == keys.EDGE_INDEX:
            out[k] = inv[v[:, ke]]
        elif k in OFFSITE_KEYS:
            out[k] = v[kp]
        elif k == keys.T:
            out[k] = v
        else:
            out[k] = v[perm]
    return out, perm, kp


# ---------------------------------------------------------------- checks
def _max_rel(a: torch.Tensor, b: torch.Tensor, scale: float) -> float:
    return float((a - b).abs().max()) / scale if a.numel() else 0.0


def check_orthogonal_equivariance(model: Model, batch: dict, irreps_block: str,
                                  rotation: np.ndarray, scale: float) -> float:
    """max |f(R x) - R f(x)| / scale for onsite and offsite blocks (asserts atoms moved)."""
    moved = batch[keys.POS].to(torch.float64) @ torch.as_tensor(rotation).T
    assert float((moved - batch[keys.POS]).abs().max()) > 1e-3, "the rotation did not move the atoms"
    on, off = model(batch)
    on_r, off_r = model(transform_batch(batch, rotation, irreps_block))
    on_e, off_e = transform_blocks(on, off, rotation, irreps_block)
    return max(_max_rel(on_r, on_e, scale), _max_rel(off_r, off_e, scale))


def check_permutation(model: Model, batch: dict, seed: int, scale: float) -> float:
    on, off = model(batch)
    pb, perm, kp = permute_batch(batch, seed)
    on_p, off_p = model(pb)
    return max(_max_rel(on_p, on[perm], scale), _max_rel(off_p, off[kp], scale))


def check_translation(model: Model, batch: dict, shift: tuple[float, float, float],
                      scale: float) -> float:
    on, off = model(batch)
    tb = dict(batch)
    tb[keys.POS] = batch[keys.POS] + torch.as_tensor(shift, dtype=batch[keys.POS].dtype)
    on_t, off_t = model(tb)
    return max(_max_rel(on_t, on, scale), _max_rel(off_t, off, scale))


def check_batch_vs_single(model: Model, batch: dict, scale: float) -> float:
    """Each molecule of a multi-molecule batch alone gives the same blocks as in the batch."""
    on, off = model(batch)
    err = 0.0
    for mol in range(int(batch[keys.BATCH].max()) + 1):
        single = select_molecule(batch, mol)
        on_s, off_s = model(single)
        atoms = batch[keys.BATCH] == mol
        pairs = batch[keys.BATCH][batch[keys.PAIR_INDEX][0]] == mol
        err = max(err, _max_rel(on_s, on[atoms], scale), _max_rel(off_s, off[pairs], scale))
    return err
