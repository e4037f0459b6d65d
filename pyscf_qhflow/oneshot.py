"""One-shot ML-DFT: energy and forces at the predicted density, no SCF.

Steps: predicted Fock F (PySCF order, Hartree) -> orbitals from F C = S C e
in a canonically orthogonalised basis (near-singular S directions dropped) ->
aufbau occupations (``mf.get_occ``) -> density D -> ``mf.energy_tot(D)``, the
Kohn-Sham energy functional at D -> PySCF's analytic nuclear gradient
evaluated with the predicted orbitals, its Pulay (overlap) term built from
the occupied block of F[D]. That makes it the exact nuclear derivative of
E_KS for the predicted MO coefficients held fixed and re-orthonormalised as
the basis functions move with the atoms. By default the gradient's J/K
derivative integrals are density fitted (:func:`gradient_method`: about half
the gradient's time, < 1 meV/Angstrom from the exact contraction), and its
exchange-correlation part runs on a grid of level
:data:`GRADIENT_GRID_LEVEL` (2) when ``mf``'s grid is finer (a third less
gradient time on ethanol, 0.6 meV/Angstrom at most from the level-3 grid);
the energies are never fitted and always on ``mf``'s grid.

The same Fock build also gives the Harris-Foulkes energy
E_H = E_KS[D] + Tr((D_out - D) F[D]), where D_out is the aufbau density of
F[D] (one diagonalisation, no further Fock build). Both errors are second
order in the density error, and to that order they have opposite signs:
E_KS[D] lies above the SCF energy (it is variational) and E_H below it
whenever the Hartree-exchange-correlation kernel is positive, as the Hartree
term makes it for charge errors. ``[e_harris, e_tot]`` is therefore a
bracket of the SCF energy in the linear-response regime, not a guarantee;
``benchmarks/bench_oneshot.py`` counts how often it holds.

The gradient is *not* the exact derivative of the one-shot energy: the
predicted density is not stationary, so how the predicted orbitals change
with the nuclear positions matters, and it is missing (at SCF convergence it
would not contribute).
``benchmarks/bench_oneshot.py`` measures the difference against finite
differences of the one-shot energy.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .guess.hook import predict_beside, prepare, resolve_model
from .uncertainty import (EnergyUncertainty, calibration_for, closed_shell_density,
                          density_spread, energy_uncertainty, orbital_gradient_sq,
                          sample_energy_spread)

__all__ = ["GRADIENT_JK", "GRADIENT_GRID_LEVEL", "OneShotResult", "gradient_at", "gradient_method", "orbitals_from_fock", "oneshot"]


@dataclass
class OneShotResult:
    e_tot: float  # Hartree, Kohn-Sham functional at the predicted density
    e_harris: float  # Hartree, Harris-Foulkes functional at the predicted density
    grad: np.ndarray | None  # (natm, 3) Hartree/Bohr
    mo_energy: np.ndarray
    mo_coeff: np.ndarray
    mo_occ: np.ndarray
    dm: np.ndarray
    timings: dict = field(default_factory=dict)  # seconds: inference, energy, gradient
    uncertainty: EnergyUncertainty | None = None  # calibrated half-widths, Hartree
    fock: np.ndarray | None = None  # F[D], the Fock matrix at the predicted density

    @property
    def e_tot_uncertainty(self) -> float | None:
        """68% half-width (Hartree) around ``e_tot`` (``None`` when not computed)."""
        return None if self.uncertainty is None else self.uncertainty.e_tot

    @property
    def e_mid(self) -> float:
        """Midpoint of ``[e_harris, e_tot]`` (Hartree), an estimate of the SCF energy.

        Exact to second order when, along the density error, the
        Hartree-xc kernel equals minus the inverse non-interacting response
        (one Roothaan step from D would then land as far beyond the SCF
        density as D is before it). How well it does on the model's errors
        is measured in ``benchmarks/RESULTS.md`` ("Harris-Foulkes"). The
        gradient ``grad`` belongs to ``e_tot``, not to this estimate.
        """
        return 0.5 * (self.e_tot + self.e_harris)


def orbitals_from_fock(fock: np.ndarray, overlap: np.ndarray, lindep: float = 1e-8):
    """Solve F C = S C e by canonical orthogonalisation.

    Directions of S with eigenvalue below ``lindep`` are dropped, so the
    number of orbitals may be smaller than the number of AOs.
    """
    s_val, s_vec = np.linalg.eigh(overlap)
    keep = s_val > lindep
    x = s_vec[:, keep] / np.sqrt(s_val[keep])  # [nao, nmo], X^T S X = 1
    mo_energy, c = np.linalg.eigh(x.T @ fock @ x)
    return mo_energy, x @ c


GRADIENT_JK = ("df", "exact")

# The one-shot gradient's XC grid (PySCF level) when mf's is finer.  Measured against
# the level-3 grid (benchmarks/bench_oneshot_speed.py --gradient-grid-check, RESULTS 23):
# <= 0.6 meV/Angstrom on ethanol and two QM9 test molecules (level 1: up to 10 meV/Angstrom),
# against one-shot force errors of ~30 meV/Angstrom; the XC part dominates the gradient.
GRADIENT_GRID_LEVEL = 2


def gradient_method(mf, gradient_jk: str = "df", grid_level: int | None = None):
    """PySCF's nuclear-gradient object for ``mf``, with J/K derivatives exact or density fitted.

    ``grid_level``: the XC part on a grid of this PySCF level (``mf``'s other
    grid settings) when it is coarser than ``mf``'s; ``None``: ``mf``'s grid.

    ``"df"`` contracts the two-electron derivative integrals through PySCF's
    default auxiliary basis (def2-universal-jkfit for def2 bases) on a
    density-fitted view of ``mf`` that shares its grid; the energy stays the
    exact, non-fitted functional. Measured on QM9 test molecules the fitted
    gradient differs from the exact one by well under 1 meV/Angstrom
    (``benchmarks/bench_oneshot_speed.py``, RESULTS "one-shot speed"), against
    one-shot force errors of ~30 meV/Angstrom, and it is about twice as fast.
    ``"exact"`` uses the four-centre derivative integrals. A ``mf`` that is
    already density fitted keeps its own fitting either way.
    """
    if gradient_jk not in GRADIENT_JK:
        raise ValueError(f"gradient_jk must be one of {GRADIENT_JK}, got {gradient_jk!r}")
    if gradient_jk == "exact" or getattr(mf, "with_df", None) is not None:
        grad = mf.nuc_grad_method()
    else:
        grad = mf.density_fit().nuc_grad_method()
    grids = getattr(mf, "grids", None)  # HF has none
    # a user's own atom_grid overrides levels: their grid is kept
    if (grid_level is not None and grids is not None and not grids.atom_grid
            and grid_level < grids.level):
        from pyscf.dft import gen_grid
        coarse = gen_grid.Grids(mf.mol)
        for key in ("prune", "radi_method", "becke_scheme", "radii_adjust"):
            setattr(coarse, key, getattr(grids, key))
        coarse.level = grid_level
        grad.grids = coarse.build(with_non0tab=True)
    return grad


def oneshot(mf, forces: bool = True, model=None, gradient_jk: str = "df",
            num_samples: int | None = None, seed: int = 0,
            uncertainty_signal: str | None = None,
            gradient_grid_level: int | None = GRADIENT_GRID_LEVEL) -> OneShotResult:
    """Energy (and gradient) of an RKS/RHF object at the model's predicted density.

    The grid, the in-core integrals and H_init are built once, on ``mf``
    (:func:`pyscf_qhflow.hinit.hinit_beside`), and shared by the prediction,
    the energy and the gradient. ``gradient_jk`` chooses exact or
    density-fitted J/K derivatives for the gradient (:func:`gradient_method`);
    the energies are never fitted.  ``gradient_grid_level``: the gradient's XC
    grid when coarser than ``mf``'s (``None``: ``mf``'s grid).

    ``num_samples`` flow samples from prior draws seeded with ``seed`` (one
    network batch) give the ``samples`` and ``density_spread`` signals;
    default: the calibration's K when the error bars are scaled from the
    ``samples`` signal, else none (the shipped signal, ``gradient``, needs no
    samples, and they cost 3-5 network passes).  ``uncertainty_signal``
    picks the signal the error bars are scaled from (default: the
    calibration's, see :mod:`pyscf_qhflow.uncertainty`).
    """
    from pyscf.scf import hf
    if not isinstance(mf, hf.RHF):
        raise TypeError(f"oneshot supports RHF/RKS objects, got {type(mf).__name__}")
    if gradient_jk not in GRADIENT_JK:
        raise ValueError(f"gradient_jk must be one of {GRADIENT_JK}, got {gradient_jk!r}")
    mol = mf.mol
    model = resolve_model(mf, model)
    layout = prepare(model, mol)  # input, support and AO layout, once
    calibration, calibrated = calibration_for(model)
    if num_samples is None:
        wanted = uncertainty_signal or calibration.get("default_signal")
        num_samples = int(calibration.get("num_samples", 0)) if wanted == "samples" else 0
    timings = {}
    t0 = time.perf_counter()
    # H_init on mf's own grids and integrals, which the energy and gradient reuse
    fock, _, _, samples = predict_beside(mf, mol, model, layout, num_samples=num_samples,
                                         seed=seed)
    timings["inference"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    overlap = mf.get_ovlp()
    mo_energy, mo_coeff = orbitals_from_fock(fock, overlap)
    mo_occ = mf.get_occ(mo_energy, mo_coeff)
    dm = mf.make_rdm1(mo_coeff, mo_occ)
    veff = mf.get_veff(mol, dm)
    e_tot = float(mf.energy_tot(dm, vhf=veff))
    fock_at_dm = mf.get_fock(dm=dm, vhf=veff)  # cycle=-1: no damping, DIIS or shift
    out_energy, out_coeff = orbitals_from_fock(fock_at_dm, overlap)
    dm_out = mf.make_rdm1(out_coeff, mf.get_occ(out_energy, out_coeff))
    e_harris = e_tot + float(np.einsum("ij,ji->", dm_out - dm, fock_at_dm))
    timings["energy"] = time.perf_counter() - t0

    # error-bar signals: all from this Fock build, the samples without one of their own
    signals = {"bracket": 0.5 * (e_tot - e_harris),
               "gradient": orbital_gradient_sq(mf, mo_coeff, mo_occ, fock_at_dm)}
    if samples:
        nocc = mol.nelectron // 2
        dms = [closed_shell_density(f, overlap, nocc) for f in samples]
        signals["samples"] = sample_energy_spread(dms, dm, fock_at_dm)
        signals["density_spread"] = density_spread(dms, dm, overlap)
    uncertainty = energy_uncertainty(signals, calibration, uncertainty_signal, calibrated)

    grad = None
    if forces:
        t0 = time.perf_counter()
        grad = gradient_at(mf, mo_energy, mo_coeff, mo_occ, fock_at_dm, gradient_jk,
                           gradient_grid_level)
        timings["gradient"] = time.perf_counter() - t0
    return OneShotResult(e_tot, e_harris, grad, mo_energy, mo_coeff, mo_occ, np.asarray(dm),
                         timings, uncertainty, np.asarray(fock_at_dm))


def gradient_at(mf, mo_energy, mo_coeff, mo_occ, fock_at_dm, gradient_jk: str = "df",
                grid_level: int | None = GRADIENT_GRID_LEVEL):
    """The one-shot nuclear gradient (natm, 3) Hartree/Bohr at the predicted orbitals.

    The Pulay term comes from the occupied block of F[D] (``fock_at_dm``),
    not from the predicted eigenvalues: the gradient is then the exact
    derivative of E_KS with the predicted MO coefficients held fixed
    (re-orthonormalised as the basis moves). Rotating within the occupied
    space leaves D unchanged. ``grid_level``: the XC part's grid when coarser
    than ``mf``'s (:func:`gradient_method`). ``OneShotResult`` holds every argument, so a
    caller that asked for energies first can add the gradient later.
    """
    occupied = mo_occ > 0
    c_occ = mo_coeff[:, occupied]
    occ_energy, rotation = np.linalg.eigh(c_occ.T @ fock_at_dm @ c_occ)
    grad_coeff, grad_energy = mo_coeff.copy(), mo_energy.copy()
    grad_coeff[:, occupied], grad_energy[occupied] = c_occ @ rotation, occ_energy
    return gradient_method(mf, gradient_jk, grid_level).kernel(grad_energy, grad_coeff, mo_occ)
