"""One-shot energies and forces, with a stand-in predictor returning the converged Fock."""
from __future__ import annotations

import numpy as np
import pytest
from pyscf import dft, scf

from pyscf_qhflow.oneshot import oneshot, orbitals_from_fock


class FixedFock:
    name = "stand-in"

    def __init__(self, fock):
        self.fock = fock

    def predict_fock(self, mol):
        return self.fock


@pytest.mark.parametrize("xc", ["hf", "b3lyp"])
def test_converged_fock_reproduces_scf(water, xc):
    mf = scf.RHF(water) if xc == "hf" else dft.RKS(water, xc=xc)
    if xc != "hf":
        mf.grids.level = 1
    mf.conv_tol = 1e-11
    mf.conv_tol_grad = 1e-7
    e_scf = mf.kernel()
    g_scf = mf.nuc_grad_method().kernel()
    res = oneshot(mf, model=FixedFock(mf.get_fock()), gradient_jk="exact")
    assert abs(res.e_tot - e_scf) < 1e-8
    assert abs(res.e_harris - e_scf) < 1e-8  # D_out = D at self-consistency
    assert abs(res.e_mid - e_scf) < 1e-8
    np.testing.assert_allclose(res.grad, g_scf, atol=1e-6)
    assert set(res.timings) == {"inference", "energy", "gradient"}
    nelec = np.einsum("ij,ji->", res.dm, mf.get_ovlp())
    assert abs(nelec - water.nelectron) < 1e-10


@pytest.mark.parametrize("xc", ["hf", "b3lyp"])
def test_harris_and_kohn_sham_energy_errors_are_second_order(water, xc):
    """A perturbed Fock: E_KS above E_SCF, E_H <= E_KS, both errors 4x smaller at half the error.

    Whether E_H falls below E_SCF depends on the kind of density error (it
    does not for these random HF perturbations), so that is measured on the
    model's errors in benchmarks/bench_oneshot.py, not asserted here.
    """
    mf = scf.RHF(water) if xc == "hf" else dft.RKS(water, xc=xc)
    if xc != "hf":
        mf.grids.level = 1
    mf.conv_tol = 1e-11
    e_scf = mf.kernel()
    noise = np.random.default_rng(1).normal(scale=1e-3, size=(water.nao, water.nao))  # Ha
    errors = []
    for scale in (1.0, 0.5):
        res = oneshot(mf, forces=False, model=FixedFock(mf.get_fock() + scale * (noise + noise.T)))
        assert res.e_harris <= res.e_tot
        errors.append((res.e_tot - e_scf, abs(res.e_harris - e_scf)))
    (ks_1, h_1), (ks_2, h_2) = errors
    assert ks_1 > 1e-5 and h_1 > 1e-6  # the perturbation is not negligible
    assert 0.2 < ks_2 / ks_1 < 0.3 and 0.2 < h_2 / h_1 < 0.35


def test_gradient_is_the_derivative_at_fixed_mo_coefficients(water):
    """HF, a perturbed Fock: the one-shot gradient equals finite differences of
    E[D(R)], D(R) = 2 C (C^T S(R) C)^-1 C^T with the predicted occupied C fixed."""
    mf = scf.RHF(water)
    mf.conv_tol = 1e-11
    mf.kernel()
    noise = np.random.default_rng(2).normal(scale=3e-3, size=(water.nao, water.nao))
    res = oneshot(mf, model=FixedFock(mf.get_fock() + noise + noise.T), gradient_jk="exact")
    c_occ = res.mo_coeff[:, res.mo_occ > 0]
    coords, step = water.atom_coords(), 1e-4  # Bohr

    def energy(displaced_coords):
        mol = water.set_geom_(displaced_coords, unit="Bohr", inplace=False)
        s_mo = c_occ.T @ mol.intor("int1e_ovlp") @ c_occ
        dm = 2 * c_occ @ np.linalg.solve(s_mo, c_occ.T)
        return scf.RHF(mol).energy_tot(dm)

    for atom, axis in [(0, 2), (1, 1), (2, 0)]:
        plus, minus = coords.copy(), coords.copy()
        plus[atom, axis] += step
        minus[atom, axis] -= step
        fd = (energy(plus) - energy(minus)) / (2 * step)
        assert abs(res.grad[atom, axis] - fd) < 1e-6, (atom, axis, res.grad[atom, axis], fd)


@pytest.mark.parametrize("xc", ["hf", "b3lyp"])
def test_density_fitted_gradient_is_close_to_exact_and_energies_are_not_fitted(water, xc):
    """The default fitted J/K derivatives move the forces by far less than the
    model's errors (~1e-3 Ha/Bohr); the energies are the exact functional."""
    mf = scf.RHF(water) if xc == "hf" else dft.RKS(water, xc=xc)
    if xc != "hf":
        mf.grids.level = 1
    mf.conv_tol = 1e-11
    mf.kernel()
    noise = np.random.default_rng(3).normal(scale=1e-3, size=(water.nao, water.nao))
    predictor = FixedFock(mf.get_fock() + noise + noise.T)
    exact = oneshot(mf, model=predictor, gradient_jk="exact")
    fitted = oneshot(mf, model=predictor)  # the default
    assert fitted.e_tot == pytest.approx(exact.e_tot, abs=1e-12)
    assert fitted.e_harris == pytest.approx(exact.e_harris, abs=1e-12)
    difference = np.abs(fitted.grad - exact.grad).max()
    assert 0 < difference < 5e-5, difference  # Ha/Bohr; 5e-5 = 2.6 meV/Angstrom
    assert getattr(mf, "with_df", None) is None  # the caller's object is not made fitted
    with pytest.raises(ValueError, match="gradient_jk"):
        oneshot(mf, model=predictor, gradient_jk="ri")


def test_gradient_xc_grid_is_coarsened_only_below_the_scf_grid(water):
    """Level-3 mf: the gradient's XC runs on a level-2 grid (forces move by far less than
    the model's errors, energies not at all); a level-2 or custom grid is kept."""
    from pyscf_qhflow.oneshot import GRADIENT_GRID_LEVEL, gradient_method
    mf = dft.RKS(water, xc="b3lyp")
    mf.grids.level = 3
    mf.conv_tol = 1e-11
    mf.kernel()
    noise = np.random.default_rng(4).normal(scale=1e-3, size=(water.nao, water.nao))
    predictor = FixedFock(mf.get_fock() + noise + noise.T)
    fine = oneshot(mf, model=predictor, gradient_grid_level=None)
    coarse = oneshot(mf, model=predictor)  # the default
    assert abs(coarse.e_tot - fine.e_tot) < 1e-10  # same density and grid; only rounding
    difference = np.abs(coarse.grad - fine.grad).max()
    assert 0 < difference < 5e-5, difference  # Ha/Bohr; 5e-5 = 2.6 meV/Angstrom
    grad = gradient_method(mf, "df", GRADIENT_GRID_LEVEL)
    assert grad.grids.level == GRADIENT_GRID_LEVEL and grad.grids is not mf.grids
    assert mf.grids.level == 3  # the caller's grid is untouched
    mf.grids.level = 2
    assert gradient_method(mf, "df", GRADIENT_GRID_LEVEL).grids is None  # mf's own
    mf.grids.level, mf.grids.atom_grid = 3, {"O": (40, 194), "H": (30, 110)}
    assert gradient_method(mf, "df", GRADIENT_GRID_LEVEL).grids is None


def test_canonical_orthogonalisation_drops_null_space():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 5))
    s = a @ a.T  # rank 5: one exact null direction
    f = rng.normal(size=(6, 6))
    f = f + f.T
    e, c = orbitals_from_fock(f, s)
    assert c.shape == (6, 5)
    np.testing.assert_allclose(c.T @ s @ c, np.eye(5), atol=1e-8)
    np.testing.assert_allclose(c.T @ f @ c, np.diag(e), atol=1e-8)


def test_rejects_unrestricted(water):
    with pytest.raises(TypeError, match="RHF/RKS"):
        oneshot(scf.UHF(water), model=FixedFock(np.eye(water.nao)))


def test_cli_prints_the_bracket_and_the_scf_errors(capsys):
    """``qhflow oneshot`` with the shipped model on water, against its own SCF."""
    from conftest import EXAMPLES
    from pyscf_qhflow.cli.main import main

    argv = ["oneshot", str(EXAMPLES / "water.xyz"), "--grid-level", "1", "--compare-scf"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    values = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    e_ks = float(out.split("E Kohn-Sham at the predicted density")[1].split()[0])
    e_h = float(out.split("E Harris-Foulkes")[1].split()[0])
    e_scf = float(values["SCF"].split()[-2])
    assert e_h <= e_ks and abs(e_ks - e_scf) < 5e-3  # Hartree; the model is trained
    assert "errors (meV): Kohn-Sham" in out and "force MAE" in out
    assert len([ln for ln in out.splitlines() if ln.startswith("  H ")]) == 2


def test_cli_rejects_an_open_shell(capsys):
    from conftest import EXAMPLES
    from pyscf_qhflow.cli.main import main

    assert main(["oneshot", str(EXAMPLES / "water.xyz"), "--charge", "1"]) == 2
    assert "needs a closed shell" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["oneshot", "scf"])
def test_cli_reports_a_missing_model(command, tmp_path, capsys):
    from conftest import EXAMPLES
    from pyscf_qhflow.cli.main import main

    missing = tmp_path / "missing.pt"
    assert main([command, str(EXAMPLES / "water.xyz"), "--model", str(missing)]) == 2
    assert capsys.readouterr().out.strip() == f"qhflow {command}: no checkpoint file at {missing}"


@pytest.mark.parametrize("hinit_grid_level", [None, 1])
def test_sharing_the_grid_and_integrals_leaves_energy_and_forces_unchanged(
        water, hinit_grid_level, monkeypatch):
    """oneshot builds H_init beside mf (its in-core integrals; its grid too with
    hinit_grid_level None) and reuses them; a predictor that cannot take H_init builds
    its own. Both give the same numbers."""
    from pyscf_qhflow import config
    from pyscf_qhflow.guess.predictor import Predictor
    from pyscf_qhflow.hinit import minao_fock
    from pyscf_qhflow.model import QHFlowModel

    monkeypatch.setattr(config, "hinit_grid_level", hinit_grid_level)
    predictor = Predictor(QHFlowModel.from_config("tiny", seed=0).double())
    hinit = minao_fock(water, grid_level=hinit_grid_level or 3)

    class OwnHinit:  # takes no hinit: oneshot cannot share anything with it
        name, xc, basis = "own-hinit", predictor.xc, predictor.basis

        def predict_fock(self, mol):
            return predictor.predict_fock(mol, hinit=hinit)

    shared_mf = dft.RKS(water, xc="b3lyp")  # grid level 3: the protocol's
    shared = oneshot(shared_mf, model=predictor)
    assert shared_mf._eri is not None and shared_mf.grids.coords is not None  # kept
    alone = oneshot(dft.RKS(water, xc="b3lyp"), model=OwnHinit())
    assert abs(shared.e_tot - alone.e_tot) < 1e-10
    assert abs(shared.e_harris - alone.e_harris) < 1e-10
    np.testing.assert_allclose(shared.grad, alone.grad, rtol=0, atol=1e-8)
