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
    res = oneshot(mf, model=FixedFock(mf.get_fock()))
    assert abs(res.e_tot - e_scf) < 1e-8
    np.testing.assert_allclose(res.grad, g_scf, atol=1e-6)
    assert set(res.timings) == {"inference", "energy", "gradient"}
    nelec = np.einsum("ij,ji->", res.dm, mf.get_ovlp())
    assert abs(nelec - water.nelectron) < 1e-10


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
