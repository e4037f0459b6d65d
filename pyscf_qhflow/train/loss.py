"""Training losses on padded Hamiltonian blocks (Hartree).

Weighting: every *real* matrix element inside the pair list counts once, on-site
and off-site pooled (padding entries are excluded through the slot mask).  The
pair list holds (i, j) and (j, i), so this is the mean over the entries of the
dense nao x nao matrix (those of atom pairs within ``pair_cutoff``), the same
average as the "H MAE" of QH9 and of :mod:`pyscf_qhflow.benchmark`.  Molecules
of a batch are pooled the same way (larger molecules weigh more).

``loss = mae_weight * MAE + mse_weight * MSE`` (Hartree and Hartree^2, as in
QHNet/QH9); :func:`occupied_eigenvalue_loss` is an optional extra term.
"""
from __future__ import annotations

import numpy as np
import torch

from ..batching import block_masks

__all__ = ["hamiltonian_errors", "hamiltonian_loss", "lowdin_orthogonalizer",
           "occupied_eigenvalue_loss"]


def hamiltonian_errors(pred: tuple[torch.Tensor, torch.Tensor],
                       target: tuple[torch.Tensor, torch.Tensor],
                       slot_mask: torch.Tensor, pair_index: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(MAE, MSE) over real entries of (onsite [N, P, P], offsite [K, P, P]) blocks."""
    m_on, m_off = block_masks(slot_mask, pair_index)
    d_on = (pred[0] - target[0])[m_on]  # [n_real_onsite]
    d_off = (pred[1] - target[1])[m_off]  # [n_real_offsite]
    diff = torch.cat([d_on, d_off])
    return diff.abs().mean(), diff.square().mean()


def hamiltonian_loss(pred, target, slot_mask, pair_index, mae_weight: float = 1.0,
                     mse_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """``mae_weight * MAE + mse_weight * MSE``; returns (loss, {'mae', 'mse'} floats)."""
    mae, mse = hamiltonian_errors(pred, target, slot_mask, pair_index)
    loss = mae_weight * mae + mse_weight * mse
    return loss, {"mae": float(mae.detach()), "mse": float(mse.detach())}


def lowdin_orthogonalizer(overlap: np.ndarray) -> np.ndarray:
    """S^(-1/2) (nao, nao) for the eigenvalue loss (symmetric orthogonalisation)."""
    w, v = np.linalg.eigh(overlap)
    return (v / np.sqrt(w)) @ v.T


def occupied_eigenvalue_loss(fock_pred: list[torch.Tensor], fock_ref: list[torch.Tensor],
                             orthogonalizers: list[torch.Tensor],
                             nocc: list[int]) -> torch.Tensor:
    """MAE (Hartree) of the occupied orbital energies of F C = S C e.

    Each molecule: ``e = eigvalsh(X F X)`` with ``X = S^(-1/2)``; the lowest
    ``nocc`` of predicted and reference are compared, pooled over molecules.
    ``eigvalsh`` has a well-defined gradient even for degenerate levels.
    """
    errs = []
    for f, f_ref, x, n in zip(fock_pred, fock_ref, orthogonalizers, nocc):
        e = torch.linalg.eigvalsh(x @ f @ x)[:n]  # [nocc]
        with torch.no_grad():
            e_ref = torch.linalg.eigvalsh(x @ f_ref @ x)[:n]
        errs.append((e - e_ref).abs())
    return torch.cat(errs).mean()
