"""Raise one molecule's overlap damping until its predicted gap is plausible.

Why: a predicted Fock matrix can be accurate element by element and still
put one level in the valence gap.  Aufbau then fills that level, and the
guess density is worse than MinAO's.  Fluoxetine (40 atoms, a CF3 group,
outside QM9) at the shipped damping ``tau = 0.01``: HOMO-LUMO gap 15 mHa
against H_init's 179 mHa; the guess energy was 2.6 Ha above the SCF energy
and the SCF took twice MinAO's cycles.  At ``tau = 0.03`` the gap is 185 mHa,
and the SCF beats MinAO.

The rule uses only what is known before the SCF.  On 148 QM9 molecules
(``qhflow tune gap-guard``) the converged B3LYP gap is never below
0.88 times H_init's gap, and the prediction's never below 0.88 either.  A
predicted gap below ``min_gap_ratio`` (default 0.5) times H_init's gap is
therefore a misplaced level, not chemistry.

What: with ``nocc`` half the neutral molecule's electron count
(:func:`neutral_nocc`), ``gap(F) = e[nocc] - e[nocc - 1]`` of
``F C = S C e``.  Starting from the model's ``tau``, while
``gap(H_init + W_tau R W_tau) < min_gap_ratio * gap(H_init)``, ``tau`` grows
threefold, up to ``max_tau``; if no ``tau`` passes, the guess is H_init itself
(every residual removed).  Gaps are rotation and permutation invariants, so
the choice of ``tau``, and the prediction, stay equivariant.
"""
from __future__ import annotations

import warnings

import numpy as np
from pyscf.lib import logger

from ..errors import QHFlowGuessWarning
from .overlap_damping import damp_residual

__all__ = ["DEFAULT_MIN_GAP_RATIO", "MAX_TAU", "neutral_nocc", "homo_lumo_gap",
           "guarded_fock", "log_guard_report"]

DEFAULT_MIN_GAP_RATIO = 0.5
MAX_TAU = 1.0
TAU_GROWTH = 3.0
FIRST_TAU = 1e-3  # where the ladder starts when the model does not damp at all


def neutral_nocc(mol) -> int:
    """Doubly occupied levels of the neutral closed-shell molecule: sum(Z) // 2.

    The network predicts the Fock matrix of the neutral closed-shell molecule
    whatever ``mol.charge`` and ``mol.spin`` are, and H_init is built from
    neutral atomic densities, so the gap to check is the neutral one.  (For a
    cation, ``nelectron // 2`` would compare the neutral HOMO-1 and HOMO.)
    """
    return int(round(float(mol.atom_charges().sum()))) // 2


def _orthogonaliser(overlap_eig: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``X = U s^-1/2`` from ``S = U diag(s) U^T``: ``X^T S X = 1`` (nao, nao)."""
    s, u = overlap_eig
    return u / np.sqrt(s)


def homo_lumo_gap(fock: np.ndarray, overlap: np.ndarray, nocc: int,
                  orthogonaliser: np.ndarray | None = None) -> float:
    """``e[nocc] - e[nocc - 1]`` of ``F C = S C e`` (Hartree); ``nocc`` doubly occupied levels."""
    nao = fock.shape[0]
    if not 0 < nocc < nao:
        raise ValueError(f"a gap needs 0 < nocc < nao, got nocc={nocc}, nao={nao}")
    if orthogonaliser is None:
        orthogonaliser = _orthogonaliser(np.linalg.eigh(np.asarray(overlap, dtype=np.float64)))
    x = orthogonaliser
    e = np.linalg.eigvalsh(x.T @ fock @ x)
    return float(e[nocc] - e[nocc - 1])


def guarded_fock(hinit: np.ndarray, residual: np.ndarray, overlap: np.ndarray, nocc: int,
                 tau: float, min_gap_ratio: float = DEFAULT_MIN_GAP_RATIO,
                 max_tau: float = MAX_TAU) -> tuple[np.ndarray, dict]:
    """``H_init + W R W`` at the smallest ``tau`` on the ladder whose gap passes.

    ``hinit``, ``residual``, ``overlap``: (nao, nao), one AO order, Hartree.
    ``min_gap_ratio <= 0`` turns the guard off (``tau`` as given); so do
    ``nocc`` outside ``(0, nao)`` and a closed H_init gap (nothing to compare
    with).  Returns the
    (unsymmetrised) Fock matrix and a report: ``tau`` used (``inf`` when the
    guess fell back to H_init), ``gap`` and ``gap_hinit`` (Hartree),
    ``taus_tried``, ``raised`` (whether ``tau`` had to grow).
    """
    unguarded = {"tau": tau, "raised": False, "taus_tried": [tau]}
    if min_gap_ratio <= 0 or not 0 < nocc < hinit.shape[0]:
        return hinit + damp_residual(residual, overlap, tau), unguarded
    overlap_eig = np.linalg.eigh(np.asarray(overlap, dtype=np.float64))
    x = _orthogonaliser(overlap_eig)
    gap_hinit = homo_lumo_gap(hinit, overlap, nocc, x)
    if gap_hinit <= 0:  # no gap to compare with (e.g. a degenerate open-shell H_init)
        return hinit + damp_residual(residual, overlap, tau, overlap_eig), unguarded
    report = {"gap_hinit": gap_hinit, "taus_tried": [], "raised": False}
    ladder = [tau] if tau > 0 else [0.0, FIRST_TAU]
    while ladder[-1] * TAU_GROWTH <= max_tau * (1 + 1e-9):
        ladder.append(ladder[-1] * TAU_GROWTH)
    for t in ladder:
        fock = hinit + damp_residual(residual, overlap, t, overlap_eig)
        gap = homo_lumo_gap(fock, overlap, nocc, x)
        report["taus_tried"].append(t)
        if gap >= min_gap_ratio * gap_hinit:
            return fock, {**report, "tau": t, "gap": gap, "raised": t != tau}
    return np.array(hinit, dtype=np.float64), {**report, "tau": float("inf"),
                                               "gap": gap_hinit, "raised": True}


def log_guard_report(mol, report: dict) -> None:
    """Log a :func:`guarded_fock` report at ``mol``'s verbosity: info when tau was raised,
    a warning (and a :class:`~pyscf_qhflow.errors.QHFlowGuessWarning`) when the
    residual was removed; nothing when the guard did not act."""
    if not report["raised"]:
        return
    gaps = f"H_init gap {report['gap_hinit'] * 1e3:.1f} mHa"
    if np.isinf(report["tau"]):
        msg = (f"qhflow gap guard: no overlap damping up to tau = {report['taus_tried'][-1]:g} "
               f"gives a plausible HOMO-LUMO gap ({gaps}); the guess is H_init alone "
               "(MinAO-density Fock)")
        warnings.warn(msg, QHFlowGuessWarning, stacklevel=4)
        logger.warn(mol, msg)
    else:
        logger.info(mol, "qhflow gap guard: predicted gap too small at tau = %g; tau raised "
                    "to %g (gap %.1f mHa, %s)", report["taus_tried"][0], report["tau"],
                    report["gap"] * 1e3, gaps)
