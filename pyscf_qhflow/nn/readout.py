"""Irreps <-> padded AO blocks: the Clebsch-Gordan change of basis, readouts, symmetrisation.

A block between shells of angular momenta l1 (rows) and l2 (columns)
transforms as ``D_l1 B D_l2^T``; it decomposes into irreps
L = |l1 - l2| .. l1 + l2 of parity (-1)^(l1 + l2) (natural when
L = l1 + l2 mod 2, pseudo otherwise).  :func:`block_change_of_basis` builds,
from e3nn's ``wigner_3j``, the orthogonal matrix Q with
``block.flatten() = features @ Q`` and ``features = block.flatten() @ Q.T``
for the whole padded per-atom layout (e.g. '3x0e+2x1o+1x2e', P = 14).
"""
from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn

from .radial import ScalarMLP

__all__ = ["block_shells", "block_change_of_basis", "block_invariants_matrix",
           "squash_irreps",
           "BlockEncoder", "BlockReadout"]


def block_shells(irreps_block) -> list[tuple[int, int]]:
    """(l, first slot) of every shell of the padded layout, in e3nn order."""
    shells, off = [], 0
    for mul, ir in o3.Irreps(irreps_block):
        if ir.p != (-1) ** ir.l:
            raise ValueError(f"AO block irreps must have the parity of Y_l, got {ir} "
                             f"in {irreps_block!r}")
        for _ in range(mul):
            shells.append((ir.l, off))
            off += 2 * ir.l + 1
    return shells


def block_change_of_basis(irreps_block) -> tuple[o3.Irreps, torch.Tensor, torch.Tensor]:
    """Orthogonal CG change of basis for P x P blocks of ``irreps_block``.

    Returns ``(irreps_out, Q, copy_index)``: ``irreps_out`` lists the irreps
    (sorted by L, natural before pseudo, multiplicities merged), ``Q``
    [P*P, P*P] float64 whose rows follow ``irreps_out`` in e3nn layout, and
    ``copy_index`` [P*P] the irrep copy (0..num_irreps-1) of every row.
    """
    shells = block_shells(irreps_block)
    size = sum(2 * l + 1 for l, _ in shells)
    groups: dict[tuple[int, int], list[torch.Tensor]] = {}
    for l1, o1 in shells:
        for l2, o2 in shells:
            for big_l in range(abs(l1 - l2), l1 + l2 + 1):
                cg = o3.wigner_3j(l1, l2, big_l, dtype=torch.float64)  # [2l1+1, 2l2+1, 2L+1]
                cg = cg * (math.sqrt(2 * big_l + 1) / cg.norm())  # orthonormal rows
                row = torch.zeros(2 * big_l + 1, size, size, dtype=torch.float64)
                row[:, o1:o1 + 2 * l1 + 1, o2:o2 + 2 * l2 + 1] = cg.permute(2, 0, 1)
                groups.setdefault((big_l, (-1) ** (l1 + l2)), []).append(
                    row.reshape(2 * big_l + 1, size * size))
    lmax_out = max(k[0] for k in groups)
    rows, irreps, copies = [], [], []
    ncopy = 0
    for big_l in range(lmax_out + 1):
        for p in ((-1) ** big_l, -(-1) ** big_l):
            items = groups.get((big_l, p), [])
            if not items:
                continue
            irreps.append((len(items), (big_l, p)))
            for item in items:
                rows.append(item)
                copies.append(torch.full((2 * big_l + 1,), ncopy, dtype=torch.long))
                ncopy += 1
    return o3.Irreps(irreps), torch.cat(rows), torch.cat(copies)


def block_invariants_matrix(irreps_block) -> torch.Tensor:
    """T [n_inv, P*P]: traces of every (k1, k2) sub-block of equal l (``inv = B.flatten() @ T.T``).

    14 invariants for '3x0e+2x1o+1x2e' (9 + 4 + 1).
    """
    shells = block_shells(irreps_block)
    size = sum(2 * l + 1 for l, _ in shells)
    rows = []
    for l1, o1 in shells:
        for l2, o2 in shells:
            if l1 != l2:
                continue
            t = torch.zeros(size, size, dtype=torch.float64)
            idx = torch.arange(2 * l1 + 1)
            t[o1 + idx, o2 + idx] = 1.0
            rows.append(t.reshape(-1))
    return torch.stack(rows)


def squash_irreps(x: torch.Tensor, copy_index: torch.Tensor, num_copies: int) -> torch.Tensor:
    """Equivariant squashing ``v -> v asinh(|v|)/|v|`` per irrep copy (x [..., D])."""
    sq = x.new_zeros(x.shape[:-1] + (num_copies,)).index_add_(-1, copy_index, x * x)
    norm = torch.sqrt(sq + 1e-12)  # [..., num_copies]
    return x * (torch.asinh(norm) / norm)[..., copy_index]


class BlockEncoder(nn.Module):
    """Padded blocks of several matrices -> eSCN features (CG decomposition, squash, linear).

    ``[M, n_mats, P, P] -> [M, (lmax+1)^2, 2, channels]``, equivariant: each
    block is written in irreps with Q^T, squashed per irrep copy (inputs of
    Hartree size stay O(1)) and mixed by an ``o3.Linear``.
    """

    def __init__(self, irreps_block: str, n_mats: int, lmax: int, channels: int):
        super().__init__()
        from .so3 import escn_irreps
        irreps, q, copies = block_change_of_basis(irreps_block)
        self.n_mats, self.lmax, self.channels = n_mats, lmax, channels
        self.num_copies = int(copies.max()) + 1
        self.register_buffer("q", q, persistent=False)
        self.register_buffer("copy_index", copies, persistent=False)
        self.irreps_in = o3.Irreps([mi for _ in range(n_mats) for mi in irreps])
        self.irreps_out = escn_irreps(lmax, channels)
        self.lin = o3.Linear(self.irreps_in, self.irreps_out)

    def forward(self, blocks: torch.Tensor) -> torch.Tensor:
        from .so3 import e3nn_to_escn
        m = blocks.shape[0]  # blocks: [M, n_mats, P, P]
        feats = blocks.reshape(m, self.n_mats, -1) @ self.q.to(blocks.dtype).T  # [M, n_mats, P*P]
        feats = squash_irreps(feats, self.copy_index, self.num_copies)
        return e3nn_to_escn(self.lin(feats.reshape(m, -1)), self.lmax, self.channels)

    def extra_repr(self) -> str:
        return f"{self.n_mats} blocks -> [M, {(self.lmax + 1) ** 2}, 2, {self.channels}]"


class BlockReadout(nn.Module):
    """e3nn features -> padded P x P blocks (o3.Linear to block irreps, scalar gates, @ Q).

    ``features [M, dim(irreps_in)], scalars [M, n_scalar] -> [M, P, P]``
    (unsymmetrised, in units of the output scale).  Each irrep copy is
    multiplied by ``1 + g(scalars)`` (per atom / per pair, element aware).
    """

    def __init__(self, irreps_in, irreps_block: str, n_scalar: int, hidden: int):
        super().__init__()
        irreps, q, copies = block_change_of_basis(irreps_block)
        self.size = int(round(q.shape[0] ** 0.5))
        self.num_copies = int(copies.max()) + 1
        self.register_buffer("q", q, persistent=False)
        self.register_buffer("copy_index", copies, persistent=False)
        self.irreps_out = irreps
        self.lin = o3.Linear(o3.Irreps(irreps_in), irreps)
        self.gate = ScalarMLP([n_scalar, hidden, self.num_copies], last_gain=0.1)

    def forward(self, features: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        y = self.lin(features)  # [M, P*P] in block irreps
        y = y * (1.0 + self.gate(scalars))[:, self.copy_index]
        return (y @ self.q.to(y.dtype)).reshape(-1, self.size, self.size)  # [M, P, P]
