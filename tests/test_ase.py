"""ASE calculator: forces are minus the derivative of the energy in 'scf' mode."""
from __future__ import annotations

import numpy as np
import pytest

ase = pytest.importorskip("ase", reason="the ASE calculator needs the optional 'ase' extra")
from ase import Atoms  # noqa: E402
from pyscf import scf  # noqa: E402

from pyscf_qhflow.ase import QHFlowCalculator  # noqa: E402


class MinaoFock:
    name = "stand-in-minao-fock"

    def predict_fock(self, mol):
        mf = scf.RHF(mol)
        return mf.get_fock(dm=mf.init_guess_by_minao())


def water():
    return Atoms("OH2", positions=[[0.0, 0.0, 0.12], [0.0, 0.76, -0.47], [0.05, -0.75, -0.46]])


def test_scf_forces_match_finite_differences():
    atoms = water()
    atoms.calc = QHFlowCalculator(xc="hf", mode="scf", model=MinaoFock())
    forces = atoms.get_forces()
    assert atoms.calc.last_mf.qhflow_info["used"]
    h = 1e-3  # Angstrom
    for a, k in [(0, 2), (1, 1), (2, 0)]:
        e = []
        for sign in (1, -1):
            disp = atoms.copy()
            disp.calc = QHFlowCalculator(xc="hf", mode="scf", model=MinaoFock())
            disp.positions[a, k] += sign * h
            e.append(disp.get_potential_energy())
        fd = -(e[0] - e[1]) / (2 * h)
        assert abs(fd - forces[a, k]) < 1e-4, (a, k, fd, forces[a, k])


def test_oneshot_mode_and_bad_mode():
    atoms = water()
    atoms.calc = QHFlowCalculator(xc="hf", mode="oneshot", model=MinaoFock())
    assert np.isfinite(atoms.get_potential_energy())
    assert atoms.get_forces().shape == (3, 3)
    with pytest.raises(ValueError, match="mode must be"):
        QHFlowCalculator(mode="md")
