"""Damp the predicted residual along near-linearly-dependent AO directions.

Why: the orbitals come from the generalised eigenproblem ``F C = S C e``.
Along an AO combination ``v`` with a tiny overlap eigenvalue ``s = v^T S v``
(def2-SVP on QM9 reaches ``s ~ 5e-5``: diffuse s functions of a ring), a
real Fock matrix has ``v^T F v = O(s)`` too, because it is an operator's
matrix.  A predicted residual R = F_pred - H_init carries errors ``delta``
that do not shrink with ``s``, and the eigenproblem turns them into an
orbital energy shift of about ``delta / s``: 1e-3 Ha of error becomes a
spurious orbital at -14 Ha that aufbau then fills, so the guess density
misses a valence orbital.

What: with ``S = U diag(s) U^T``, the damped residual is ``W R W`` with
``W = U diag(s / (s + tau)) U^T = S (S + tau I)^-1``.  Directions with
``s >> tau`` keep their residual; directions with ``s << tau`` lose it and
keep H_init, itself a true Fock matrix (of the MinAO density).  ``W`` is a
function of ``S``, so the step commutes with rotations (``S -> D S D^T``)
and atom permutations: the prediction stays equivariant.  ``tau = 0`` is
the identity.
"""
from __future__ import annotations

import numpy as np

__all__ = ["overlap_damping_matrix", "damp_residual"]


def overlap_damping_matrix(overlap: np.ndarray, tau: float,
                           overlap_eig: tuple[np.ndarray, np.ndarray] | None = None
                           ) -> np.ndarray:
    """``W = S (S + tau I)^-1`` (nao, nao), symmetric; ``tau`` dimensionless (S units).

    ``overlap_eig``: ``np.linalg.eigh(overlap)`` when the caller already has it.
    """
    if tau < 0:
        raise ValueError(f"overlap damping tau must be >= 0, got {tau}")
    s, u = (np.linalg.eigh(np.asarray(overlap, dtype=np.float64)) if overlap_eig is None
            else overlap_eig)
    return (u * (s / (s + tau))) @ u.T


def damp_residual(residual: np.ndarray, overlap: np.ndarray, tau: float,
                  overlap_eig: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """``W R W`` with ``W = S (S + tau I)^-1``: R's part along near-null directions of S removed.

    ``residual`` and ``overlap`` are (nao, nao) in the same AO order (any order:
    ``W`` is built from ``S`` alone); returns a symmetric (nao, nao) float64 array.
    ``overlap_eig``: ``np.linalg.eigh(overlap)`` when the caller already has it.
    """
    residual = np.asarray(residual, dtype=np.float64)
    if tau == 0:
        return residual
    w = overlap_damping_matrix(overlap, tau, overlap_eig)
    damped = w @ residual @ w
    return 0.5 * (damped + damped.T)
