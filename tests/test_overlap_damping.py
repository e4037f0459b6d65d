"""The residual's overlap damping (pyscf_qhflow.overlap_damping)."""
import numpy as np
import pytest
import scipy.linalg
from pyscf import gto

from pyscf_qhflow.guess.overlap_damping import damp_residual, overlap_damping_matrix


def _random_symmetric(n, seed, scale=1e-3):
    a = np.random.default_rng(seed).normal(size=(n, n)) * scale
    return a + a.T


def test_zero_tau_is_the_identity_and_negative_tau_is_refused(water):
    s = water.intor("int1e_ovlp")
    r = _random_symmetric(water.nao, 0)
    np.testing.assert_array_equal(damp_residual(r, s, 0.0), r)
    np.testing.assert_allclose(overlap_damping_matrix(s, 0.0), np.eye(water.nao), atol=1e-10)
    with pytest.raises(ValueError, match="tau must be >= 0"):
        damp_residual(r, s, -1e-3)


def test_damping_removes_the_spurious_orbital_of_a_near_null_overlap_direction():
    """Two almost coincident diffuse s functions: S has an eigenvalue ~1e-5.

    A residual error of 1e-3 Ha along that direction, harmless element-wise,
    becomes an orbital energy shift of ~1e-3 / s in F C = S C e: a spurious
    deep level.  The damped residual keeps the spectrum close to H_init's.
    """
    mol = gto.M(atom="H 0 0 0; H 0 0 0.74", basis={"H": gto.basis.parse("""
        H S
          0.05  1.0
        H S
          0.0505 1.0
        H S
          1.0 1.0""")}, verbose=0)
    s = mol.intor("int1e_ovlp")
    hcore = mol.intor("int1e_kin") + mol.intor("int1e_nuc")
    w, u = np.linalg.eigh(s)
    assert w[0] < 1e-4
    null = u[:, 0]
    residual = 1e-3 * np.outer(null, null)  # error along the near-null direction only
    e_ref = scipy.linalg.eigh(hcore, s, eigvals_only=True)
    e_raw = scipy.linalg.eigh(hcore + residual, s, eigvals_only=True)
    e_damped = scipy.linalg.eigh(hcore + damp_residual(residual, s, 1e-2), s,
                                 eigvals_only=True)
    assert np.max(np.abs(e_raw - e_ref)) > 5.0  # 1e-3 / s: several Hartree
    assert np.max(np.abs(e_damped - e_ref)) < 1e-3


def test_damping_keeps_the_residual_of_well_conditioned_directions(water):
    s = water.intor("int1e_ovlp")
    w, u = np.linalg.eigh(s)
    big = u[:, -1]  # largest overlap eigenvalue (~2 or more)
    r = 1e-3 * np.outer(big, big)
    tau = 1e-2
    expected = (w[-1] / (w[-1] + tau)) ** 2
    np.testing.assert_allclose(damp_residual(r, s, tau), expected * r, atol=1e-12)


def test_damping_is_rotation_and_permutation_equivariant(water):
    """W is a function of S: rotating (or permuting) S and R commutes with the damping."""
    s = water.intor("int1e_ovlp")
    r = _random_symmetric(water.nao, 1)
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(water.nao, water.nao)))
    np.testing.assert_allclose(damp_residual(q @ r @ q.T, q @ s @ q.T, 1e-2),
                               q @ damp_residual(r, s, 1e-2) @ q.T, atol=1e-12)


def test_model_prediction_applies_its_overlap_damping(water):
    """predict_fock with tau > 0 equals H_init + W (F_tau=0 - H_init) W, and tau is kept
    through a checkpoint's config."""
    import dataclasses

    from pyscf_qhflow.guess.predictor import Predictor
    from pyscf_qhflow.hinit import minao_fock
    from pyscf_qhflow.model import ModelConfig, QHFlowModel
    model = QHFlowModel.from_config("tiny", seed=0).double()
    hinit = minao_fock(water, xc=model.xc)
    s = water.intor("int1e_ovlp")
    plain = Predictor(model, overlap_damping=0.0).predict_fock(water, hinit=hinit)
    model.config = dataclasses.replace(model.config, overlap_damping=1e-2)  # as stored
    damped = Predictor(model).predict_fock(water, hinit=hinit)
    np.testing.assert_allclose(damped, hinit + damp_residual(plain - hinit, s, 1e-2),
                               atol=1e-12)
    assert np.abs(damped - plain).max() > 1e-9  # the untrained residual is not ~0
    cfg = ModelConfig.from_dict(model.config.to_dict())
    assert cfg.overlap_damping == 1e-2
    with pytest.raises(ValueError, match="overlap_damping must be >= 0"):
        ModelConfig.from_dict({**model.config.to_dict(), "overlap_damping": -1.0})
