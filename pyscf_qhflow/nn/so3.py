"""Wigner-D matrices in e3nn's real spherical-harmonic basis, exact in float64.

e3nn's own ``Irrep.D_from_matrix`` goes through Euler angles and stored
float32 constants, which limits it to ~1e-7; equivariance tests at 1e-8 need
better.  Here D is fitted from e3nn's spherical harmonics themselves (exact
polynomials): for sample directions X, ``Y_l(X R^T) = Y_l(X) D_l(R)^T``, so
``D_l(R)^T = pinv(Y_l(X)) Y_l(X R^T)``.  The same formula holds for improper
rotations (reflections), giving the parity (-1)^l of the AO basis.

All rotations here act on vectors written in e3nn's Cartesian frame (see
:func:`pyscf_qhflow.aolayout.positions_to_e3nn`).
"""
from __future__ import annotations

from functools import lru_cache

import torch
from e3nn import o3

__all__ = ["wigner_D", "irreps_wigner_D"]


@lru_cache(maxsize=None)
def _fit_points(l: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed sample directions (K, 3) and pinv of their harmonics (2l+1, K), float64."""
    gen = torch.Generator().manual_seed(1234 + l)
    pts = torch.randn(4 * l + 4, 3, generator=gen, dtype=torch.float64)
    pts = pts / pts.norm(dim=-1, keepdim=True)
    y = o3.spherical_harmonics(l, pts, normalize=False)  # [K, 2l+1]
    return pts, torch.linalg.pinv(y)


def wigner_D(l: int, rotation: torch.Tensor) -> torch.Tensor:
    """D_l(R) for rotations R of shape [..., 3, 3] (e3nn frame) -> [..., 2l+1, 2l+1].

    Satisfies ``Y_l(R x) = D_l(R) Y_l(x)`` for e3nn's spherical harmonics.
    """
    if l == 0:
        return torch.ones(rotation.shape[:-2] + (1, 1), dtype=rotation.dtype,
                          device=rotation.device)
    pts, pinv = _fit_points(l)
    pts = pts.to(rotation)
    pinv = pinv.to(rotation)
    rotated = torch.einsum("kj,...ij->...ki", pts, rotation)  # [..., K, 3] = X R^T
    y_rot = o3.spherical_harmonics(l, rotated, normalize=False)  # [..., K, 2l+1]
    return (pinv @ y_rot).transpose(-1, -2)


def irreps_wigner_D(irreps, rotation: torch.Tensor) -> torch.Tensor:
    """Block-diagonal D for an e3nn ``Irreps`` (parity from the AO polynomials).

    Only irreps whose parity is that of the polynomials, (-1)^l, are allowed,
    so a reflection acts as it does on atomic orbitals.
    """
    irreps = o3.Irreps(irreps)
    blocks = []
    for mul, ir in irreps:
        if ir.p != (-1) ** ir.l:
            raise ValueError(f"irrep {ir} does not have the parity of Y_l; use {ir.l}"
                             f"{'e' if ir.l % 2 == 0 else 'o'}")
        d = wigner_D(ir.l, rotation)
        blocks.extend([d] * mul)
    return torch.block_diag(*blocks) if rotation.dim() == 2 else _batched_block_diag(blocks)


def _batched_block_diag(blocks: list[torch.Tensor]) -> torch.Tensor:
    batch = blocks[0].shape[:-2]
    n = sum(b.shape[-1] for b in blocks)
    out = blocks[0].new_zeros(batch + (n, n))
    off = 0
    for b in blocks:
        k = b.shape[-1]
        out[..., off:off + k, off:off + k] = b
        off += k
    return out
