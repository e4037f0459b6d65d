"""ASE calculator: forces are minus the derivative of the energy in 'scf' mode; error bars and the SCF switch."""
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


def test_oneshot_results_carry_the_uncertainty():
    atoms = water()
    atoms.calc = QHFlowCalculator(xc="hf", mode="oneshot", model=MinaoFock())
    atoms.get_potential_energy()
    r = atoms.calc.results
    assert r["mode_used"] == "oneshot"
    assert np.isfinite(r["energy_uncertainty"]) and r["energy_uncertainty"] > 0
    assert r["energy_uncertainty_95"] >= r["energy_uncertainty"]
    assert atoms.calc.get_property("energy_uncertainty") == r["energy_uncertainty"]


def test_scf_above_switches_to_scf_when_unsure():
    atoms = water()
    sure = QHFlowCalculator(xc="hf", mode="oneshot", model=MinaoFock(), scf_above=1e6)
    unsure = QHFlowCalculator(xc="hf", mode="oneshot", model=MinaoFock(), scf_above=0.0)
    e_sure = sure.get_potential_energy(atoms)
    e_unsure = unsure.get_potential_energy(atoms)
    assert sure.results["mode_used"] == "oneshot"
    assert unsure.results["mode_used"] == "scf" and unsure.results["energy_uncertainty"] == 0
    assert unsure.last_mf.converged
    assert e_unsure < e_sure  # the converged energy lies below the one-shot one (variational)
    assert unsure.get_forces(atoms).shape == (3, 3)
    assert unsure.results["mode_used"] == "scf"
    with pytest.raises(ValueError, match="scf_above"):
        QHFlowCalculator(scf_above=-1.0)
