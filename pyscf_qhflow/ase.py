"""ASE calculator: energies (eV) and forces (eV/Angstrom) from the qhflow model.

``mode='oneshot'`` evaluates the Kohn-Sham energy and PySCF's analytic
gradient at the predicted density (no SCF; see :mod:`pyscf_qhflow.oneshot`).
Forces are computed only when asked for (``get_forces``); their J/K
derivatives are density fitted unless ``gradient_jk='exact'``
(:func:`pyscf_qhflow.oneshot.gradient_method`). ``mode='scf'`` runs a converged SCF warm-started from the prediction, so its
forces are the exact derivative of its energy.
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
    implemented_properties = ["energy", "forces"]

    def __init__(self, xc: str = "b3lyp", basis: str = "def2-svp", mode: str = "oneshot",
                 model=None, charge: int = 0, spin: int = 0, grid_level: int = 3,
                 conv_tol: float = 1e-10, gradient_jk: str = "df", **kwargs):
        if mode not in ("oneshot", "scf"):
            raise ValueError(f"mode must be 'oneshot' or 'scf', got {mode!r}")
        if gradient_jk not in ("df", "exact"):
            raise ValueError(f"gradient_jk must be 'df' or 'exact', got {gradient_jk!r}")
        super().__init__(**kwargs)
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
        from .oneshot import oneshot
        mol = self._mol(self.atoms)
        mf = make_scf(mol, self.xc, self.grid_level, self.conv_tol)
        mf.qhflow_model = self.model
        want_forces = "forces" in properties
        grad = None
        if self.mode == "oneshot":
            res = oneshot(mf, forces=want_forces, model=self.model, gradient_jk=self.gradient_jk)
            energy, grad = res.e_tot, res.grad
        else:
            mf.init_guess = "qhflow"
            energy = mf.kernel()
            if not mf.converged:
                raise RuntimeError("SCF did not converge in the ASE calculator")
            if want_forces:
                grad = mf.nuc_grad_method().kernel()
        self.last_mf = mf
        self.results["energy"] = float(energy) * HARTREE_TO_EV
        if grad is not None:
            self.results["forces"] = -np.asarray(grad) * HARTREE_TO_EV / BOHR_TO_ANGSTROM
