"""ASE calculator: energies (eV) and forces (eV/Angstrom) from the qhflow model.

``mode='oneshot'`` evaluates the Kohn-Sham energy and PySCF's analytic
gradient at the predicted density (no SCF; see :mod:`pyscf_qhflow.oneshot`).
Forces are computed only when asked for (``get_forces``); their J/K
derivatives are density fitted unless ``gradient_jk='exact'``
(:func:`pyscf_qhflow.oneshot.gradient_method`). ``mode='scf'`` runs a converged SCF warm-started from the prediction, so its
forces are the exact derivative of its energy.

In one-shot mode ``results['energy_uncertainty']`` is the calibrated 68%
half-width of ``results['energy']`` (eV; ``'energy_uncertainty_95'`` the 95%
one, :mod:`pyscf_qhflow.uncertainty`).  With ``scf_above=<eV>`` a geometry
whose 68% half-width exceeds it gets a converged SCF instead, warm-started
from the predicted density (the on-the-fly pattern of active-learning force
fields); ``results['mode_used']`` says which ran ('oneshot' or 'scf'), and an
SCF result's uncertainty is 0.
"""
from __future__ import annotations

import numpy as np

try:
    from ase.calculators.calculator import Calculator, all_changes
except ImportError as err:  # optional dependency
    raise ImportError("the ASE calculator needs ase: pip install 'pyscf-qhflow[ase]'") from err
from pyscf import gto

from .scfrun import make_scf
from .units import BOHR_TO_ANGSTROM, HARTREE_TO_EV

__all__ = ["QHFlowCalculator"]


class QHFlowCalculator(Calculator):
    implemented_properties = ["energy", "forces", "energy_uncertainty"]

    def __init__(self, xc: str = "b3lyp", basis: str = "def2-svp", mode: str = "oneshot",
                 model=None, charge: int = 0, spin: int = 0, grid_level: int = 3,
                 conv_tol: float = 1e-10, gradient_jk: str = "df",
                 scf_above: float | None = None, **kwargs):
        if mode not in ("oneshot", "scf"):
            raise ValueError(f"mode must be 'oneshot' or 'scf', got {mode!r}")
        if gradient_jk not in ("df", "exact"):
            raise ValueError(f"gradient_jk must be 'df' or 'exact', got {gradient_jk!r}")
        if scf_above is not None and not scf_above >= 0:
            raise ValueError(f"scf_above must be >= 0 eV or None, got {scf_above!r}")
        super().__init__(**kwargs)
        self.scf_above = scf_above
        self.xc, self.basis, self.mode, self.model = xc, basis, mode, model
        self.charge, self.spin = charge, spin
        self.grid_level, self.conv_tol = grid_level, conv_tol
        self.gradient_jk = gradient_jk
        self.last_mf = None

    def _mol(self, atoms) -> gto.Mole:
        return gto.M(atom=list(zip(atoms.get_chemical_symbols(), atoms.positions.tolist())),
                     basis=self.basis, charge=self.charge, spin=self.spin, unit="Angstrom",
                     verbose=0)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        from .oneshot import gradient_at, oneshot
        mol = self._mol(self.atoms)
        mf = make_scf(mol, self.xc, self.grid_level, self.conv_tol)
        mf.qhflow_model = self.model
        want_forces = "forces" in properties
        grad, dm0 = None, None
        mode_used, sigma, sigma95 = self.mode, 0.0, 0.0
        if self.mode == "oneshot":
            # forces wait until the switch is decided: an SCF geometry needs its own
            res = oneshot(mf, forces=False, model=self.model)
            sigma = res.uncertainty.e_tot * HARTREE_TO_EV
            sigma95 = res.uncertainty.e_tot_95 * HARTREE_TO_EV
            if self.scf_above is not None and sigma > self.scf_above:
                mode_used, dm0 = "scf", res.dm
            else:
                energy = res.e_tot
                if want_forces:
                    grad = gradient_at(mf, res.mo_energy, res.mo_coeff, res.mo_occ, res.fock,
                                       self.gradient_jk)
        if mode_used == "scf":
            if dm0 is None:
                mf.init_guess = "qhflow"
            energy = mf.kernel(dm0=dm0)
            if not mf.converged:
                raise RuntimeError("SCF did not converge in the ASE calculator")
            if want_forces:
                grad = mf.nuc_grad_method().kernel()
            sigma = sigma95 = 0.0
        self.last_mf = mf
        self.results["energy"] = float(energy) * HARTREE_TO_EV
        self.results["energy_uncertainty"] = float(sigma)
        self.results["energy_uncertainty_95"] = float(sigma95)
        self.results["mode_used"] = mode_used
        if grad is not None:
            self.results["forces"] = -np.asarray(grad) * HARTREE_TO_EV / BOHR_TO_ANGSTROM
