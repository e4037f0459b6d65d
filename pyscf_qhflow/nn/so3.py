"""Wigner-D matrices in e3nn's real spherical-harmonic basis, exact in float64.

e3nn's own ``Irrep.D_from_matrix`` goes through Euler angles and stored
float32 constants, which limits it to ~1e-7; equivariance tests at 1e-8 need
better.  Here D is fitted from e3nn's spherical harmonics themselves (exact
polynomials): for sample directions X, ``Y_l(X R^T) = Y_l(X) D_l(R)^T``, so
``D_l(R)^T = pinv(Y_l(X)) Y_l(X R^T)``.  The same formula holds for improper
rotations (reflections), giving the parity (-1)^l of the AO basis.

All rotations here act on vectors written in e3nn's Cartesian frame (see :func:`pyscf_qhflow.aolayout.positions_to_e3nn`).
"""
from __future__ import annotations

from functools import lru_cache


import torch
from e3nn import o3

__all__ = ["wigner_D", "irreps_wigner_D", "parity_irreps_wigner_D", "escn_irreps",
           "escn_to_e3nn", "e3nn_to_escn", "escn_l_of_row", "escn_wigner_D",
           "rotation_to_polar_axis"]


@lru_cache(maxsize=None)
def _fit_points(l: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed sample directions (K, 3) and pinv of their harmonics (2l+1, K), float64."""
    gen = torch.Generator().manual_seed(1234 + l)
    pts = torch.randn(4 * l + 4, 3, generator=gen, dtype=torch.float64)
    pts = pts / pts.norm(dim=-1, keepdim=True)
    y = o3.spherical_harmonics(l, pts, normalize=False)  # [K, 2l+1]
    return pts, torch.linalg.pinv(y)


# kept out of torch.compile: tracing e3nn's harmonics with symbolic shapes overflows
# sympy's recursion, and these small per-edge matrices are not where the time goes
@torch.compiler.disable
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


# --------------------------------------------------------------------------
# Irreps of any parity, and the eSCN feature layout.
#
# eSCN-style features are stored (l, m)-major as ``[..., (L+1)^2, n_class, C]``
# (row ``l*l + l + m``).  Class 0 holds "natural" irreps of parity (-1)^l
# (0e, 1o, 2e, ...), class 1 (when present) "pseudo" irreps of parity
# (-1)^(l+1) (0o, 1e, 2o, ...).  e3nn layers expect, per irrep, ``[mul, 2l+1]``
# flattened; :func:`escn_to_e3nn` / :func:`e3nn_to_escn` are the one converter
# between the two, with :func:`escn_irreps` naming the e3nn side.
# --------------------------------------------------------------------------

def parity_irreps_wigner_D(irreps, rotation: torch.Tensor) -> torch.Tensor:
    """Block-diagonal D for an ``Irreps`` of any parity; rotation [..., 3, 3] (e3nn frame).

    For an improper ``rotation`` an irrep of parity p gets p * (-1)^l times the
    AO-like :func:`wigner_D` (which already carries (-1)^l).
    """
    irreps = o3.Irreps(irreps)
    det = torch.linalg.det(rotation)  # [...]
    improper = det < 0
    blocks = []
    for mul, ir in irreps:
        d = wigner_D(ir.l, rotation)
        if ir.p != (-1) ** ir.l:
            sign = torch.where(improper, -1.0, 1.0).to(d)
            d = d * sign[..., None, None]
        blocks.extend([d] * mul)
    return torch.block_diag(*blocks) if rotation.dim() == 2 else _batched_block_diag(blocks)


def escn_irreps(lmax: int, channels: int, n_class: int = 2) -> o3.Irreps:
    """e3nn irreps of eSCN features ``[(lmax+1)^2, n_class, channels]``.

    Per l: ``channels x l(natural)`` then, if ``n_class == 2``,
    ``channels x l(pseudo)``; e.g. lmax=1, C=4: ``4x0e+4x0o+4x1o+4x1e``.
    """
    if n_class not in (1, 2):
        raise ValueError(f"n_class must be 1 (natural) or 2 (natural, pseudo), got {n_class}")
    out = []
    for l in range(lmax + 1):
        nat = (-1) ** l
        out.append((channels, (l, nat)))
        if n_class == 2:
            out.append((channels, (l, -nat)))
    return o3.Irreps(out)


def escn_to_e3nn(x: torch.Tensor) -> torch.Tensor:
    """eSCN layout ``[..., (L+1)^2, n_class, C]`` -> e3nn ``[..., dim(escn_irreps)]``."""
    nrow, n_class, c = x.shape[-3:]
    lmax = _lmax_of_rows(nrow)
    batch = x.shape[:-3]
    parts = []
    for l in range(lmax + 1):
        blk = x[..., l * l:(l + 1) * (l + 1), :, :]  # [..., 2l+1, n_class, C]
        blk = blk.movedim(-3, -1)  # [..., n_class, C, 2l+1]
        parts.append(blk.reshape(batch + (n_class * c * (2 * l + 1),)))
    return torch.cat(parts, dim=-1)


def e3nn_to_escn(x: torch.Tensor, lmax: int, channels: int, n_class: int = 2) -> torch.Tensor:
    """Inverse of :func:`escn_to_e3nn`: ``[..., dim]`` -> ``[..., (L+1)^2, n_class, C]``."""
    dim = n_class * channels * (lmax + 1) ** 2
    if x.shape[-1] != dim:
        raise ValueError(f"e3nn features of size {x.shape[-1]} do not match "
                         f"{escn_irreps(lmax, channels, n_class)} (dim {dim})")
    batch = x.shape[:-1]
    parts = []
    off = 0
    for l in range(lmax + 1):
        n = n_class * channels * (2 * l + 1)
        blk = x[..., off:off + n].reshape(batch + (n_class, channels, 2 * l + 1))
        parts.append(blk.movedim(-1, -3))  # [..., 2l+1, n_class, C]
        off += n
    return torch.cat(parts, dim=-3)


def _lmax_of_rows(nrow: int) -> int:
    lmax = int(round(nrow ** 0.5)) - 1
    if (lmax + 1) ** 2 != nrow:
        raise ValueError(f"{nrow} rows is not (lmax+1)^2 for any lmax")
    return lmax


def escn_l_of_row(lmax: int) -> torch.Tensor:
    """Angular momentum of each eSCN row, shape [(lmax+1)^2] int64."""
    return torch.cat([torch.full((2 * l + 1,), l, dtype=torch.long) for l in range(lmax + 1)])


def escn_wigner_D(lmax: int, rotation: torch.Tensor) -> torch.Tensor:
    """Block-diagonal D_0..D_lmax for rotations [..., 3, 3] -> [..., (L+1)^2, (L+1)^2].

    Natural-parity convention (a proper rotation acts the same on both classes).
    """
    return _batched_block_diag([wigner_D(l, rotation) for l in range(lmax + 1)])


def rotation_to_polar_axis(vec: torch.Tensor) -> torch.Tensor:
    """Proper rotations R [..., 3, 3] with ``R @ vec/|vec| = (0, 1, 0)`` (e3nn's polar axis y).

    The roll about y is arbitrary (SO(2)-equivariant maps do not depend on it);
    a helper axis is switched away from near-parallel directions.
    """
    u = vec / vec.norm(dim=-1, keepdim=True)  # [..., 3]
    ex = torch.zeros_like(u)
    ex[..., 0] = 1.0
    ez = torch.zeros_like(u)
    ez[..., 2] = 1.0
    helper = torch.where(u[..., :1].abs() < 0.9, ex, ez)
    e1 = torch.linalg.cross(u, helper)
    e1 = e1 / e1.norm(dim=-1, keepdim=True)
    e3 = torch.linalg.cross(e1, u)
    return torch.stack([e1, u, e3], dim=-2)
