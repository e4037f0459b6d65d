"""Training losses on padded Hamiltonian blocks (Hartree).

Weighting: every *real* matrix element inside the pair list counts once, on-site
and off-site pooled (padding entries are excluded through the slot mask).  The
pair list holds (i, j) and (j, i), so this is the mean over the entries of the
dense nao x nao matrix (those of atom pairs within ``pair_cutoff``), the same
average as the "H MAE" of QH9 and of :mod:`pyscf_qhflow.benchmark`.  Molecules
of a batch are pooled the same way (larger molecules weigh more).

``loss = mae_weight * MAE + mse_weight * MSE`` (Hartree and Hartree^2, as in
QHNet/QH9); :func:`occupied_eigenvalue_loss` and :func:`linear_density_error`
are optional extra terms.

Why a density term: the SCF starts from the aufbau density of the predicted
Fock matrix, and to first order that density depends only on the
occupied-virtual block of the Fock error in the reference orbitals, weighted
by the inverse orbital-energy gaps.  An element-wise loss spends the same
effort on the occupied-occupied and virtual-virtual blocks, which leave the
density unchanged.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from ..batching import block_masks

__all__ = ["hamiltonian_errors", "hamiltonian_loss", "lowdin_orthogonalizer",
           "occupied_eigenvalue_loss", "density_response_data", "linear_density_error"]


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


def density_response_data(fock_ref: np.ndarray, hinit: np.ndarray, overlap: np.ndarray,
                          nocc: int, tau: float = 0.0) -> dict[str, np.ndarray]:
    """Per-molecule constants of :func:`linear_density_error` (float64, one AO order).

    With the reference orbitals ``F* C = S C e`` (C^T S C = 1) and the
    inference-time damping ``W = S (S + tau)^-1``
    (:mod:`pyscf_qhflow.guess.overlap_damping`; identity for ``tau = 0``), the
    predicted Fock matrix is ``H_init + W R W`` and its occupied-virtual
    coupling in the reference orbitals is ``left @ R @ right + offset``
    ([nvirt, nocc]; ``C_v^T F* C_o = 0``).  ``inv_gap[a, i] = 1 / (e_a - e_i)``
    (1/Hartree).  Needs a virtual space: ``nocc < nao``.
    """
    from ..guess.overlap_damping import overlap_damping_matrix

    nao = overlap.shape[0]
    if not 0 < nocc < nao:
        raise ValueError(f"the density loss needs 0 < nocc < nao, got nocc={nocc}, nao={nao}")
    e, c = scipy.linalg.eigh(fock_ref, overlap)
    w = overlap_damping_matrix(overlap, tau) if tau > 0 else np.eye(nao)
    c_occ, c_vir = c[:, :nocc], c[:, nocc:]
    return {"left": c_vir.T @ w,  # [nvirt, nao]
            "right": w @ c_occ,  # [nao, nocc]
            "offset": c_vir.T @ hinit @ c_occ,  # [nvirt, nocc] Hartree
            "inv_gap": 1.0 / (e[nocc:, None] - e[None, :nocc])}  # [nvirt, nocc] 1/Hartree


def linear_density_error(residuals: list[torch.Tensor], data: list[dict]) -> torch.Tensor:
    """First-order error of the guess density, mean over molecules (electrons).

    For each molecule the orbital rotation ``U = (left R right + offset) * inv_gap``
    ([nvirt, nocc], :func:`density_response_data`) is the first-order mixing
    of virtual into occupied reference orbitals, and ``2 sqrt(2) ||U||_F`` is
    the first-order value of ``sqrt(Tr[(D - D*) S (D - D*) S])`` with
    ``D = 2 C_occ C_occ^T`` (the ``density_err`` of
    :func:`pyscf_qhflow.benchmark.fock_metrics`).  Linear in the predicted
    residual ``R`` (nao, nao): no eigen-decomposition in the graph, so the
    gradient stays finite for degenerate levels.
    """
    errs = []
    for r, d in zip(residuals, data):
        def t(name):
            return torch.as_tensor(d[name], dtype=r.dtype, device=r.device)
        u = (t("left") @ r @ t("right") + t("offset")) * t("inv_gap")  # [nvirt, nocc]
        errs.append(2.0 * np.sqrt(2.0) * torch.linalg.vector_norm(u))
    return torch.stack(errs).mean()
