"""The gap guard (pyscf_qhflow.gap_guard): tau grows only for an implausible gap."""
import numpy as np
import pytest
from pyscf import dft

import pyscf_qhflow
from pyscf_qhflow.guess.gap_guard import guarded_fock, homo_lumo_gap
from pyscf_qhflow.guess.overlap_damping import damp_residual

# A diagonal model problem: levels e_i = F_ii / S_ii.  H_init has levels
# -1, -0.5 | 0.5, 0.5 (two occupied, gap 1 Ha); the fourth AO direction is
# nearly null in S (s = 1e-3), the case the overlap damping exists for.
S = np.diag([1.0, 1.0, 1.0, 1e-3])
HINIT = np.diag([-1.0, -0.5, 0.5, 0.5e-3])
NOCC = 2


def test_gap_of_the_generalised_eigenproblem():
    assert homo_lumo_gap(HINIT, S, NOCC) == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))  # any orthogonal change of basis
    assert homo_lumo_gap(q @ HINIT @ q.T, q @ S @ q.T, NOCC) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="0 < nocc < nao"):
        homo_lumo_gap(HINIT, S, 4)


def test_tau_grows_until_the_spurious_level_leaves_the_gap():
    # an 8e-4 Ha error along the near-null direction puts a level at -0.3 Ha
    residual = np.diag([0.0, 0.0, 0.0, -8e-4])
    assert homo_lumo_gap(HINIT + residual, S, NOCC) == pytest.approx(0.2)
    fock, report = guarded_fock(HINIT, residual, S, NOCC, tau=0.0, min_gap_ratio=0.5)
    # tau = 1e-3 halves that direction (W = s / (s + tau)): level at 0.5 - 0.8 / 4 = 0.3
    assert report["tau"] == pytest.approx(1e-3) and report["raised"]
    assert report["taus_tried"] == [0.0, pytest.approx(1e-3)]
    assert report["gap"] == pytest.approx(0.8) and report["gap_hinit"] == pytest.approx(1.0)
    np.testing.assert_allclose(fock, HINIT + damp_residual(residual, S, 1e-3))


def test_a_plausible_gap_keeps_the_models_tau():
    residual = np.diag([0.01, -0.02, 0.03, 1e-5])
    fock, report = guarded_fock(HINIT, residual, S, NOCC, tau=0.01)
    assert report["tau"] == 0.01 and not report["raised"] and report["taus_tried"] == [0.01]
    np.testing.assert_array_equal(fock, HINIT + damp_residual(residual, S, 0.01))


def test_no_tau_repairs_a_wrong_well_conditioned_level_so_h_init_is_used():
    # the HOMO pushed up by 3 Ha along an s = 1 direction, where damping barely acts:
    # for every tau up to 1 it sits in, or above, the virtual levels at 0.5 Ha
    residual = np.diag([0.0, 3.0, 0.0, 0.0])
    fock, report = guarded_fock(HINIT, residual, S, NOCC, tau=0.01)
    assert report["tau"] == np.inf and report["raised"]
    assert report["taus_tried"][-1] <= 1.0 and len(report["taus_tried"]) == 5
    np.testing.assert_array_equal(fock, HINIT)


def test_guard_off_and_cases_without_a_gap_damp_as_told():
    residual = np.diag([0.0, 0.0, 0.0, -8e-4])
    expected = HINIT + damp_residual(residual, S, 0.01)
    for kwargs in ({"nocc": NOCC, "min_gap_ratio": 0.0},  # switched off
                   {"nocc": 0, "min_gap_ratio": 0.5},  # no occupied level
                   {"nocc": 4, "min_gap_ratio": 0.5}):  # no virtual level
        fock, report = guarded_fock(HINIT, residual, S, tau=0.01, **kwargs)
        np.testing.assert_array_equal(fock, expected)
        assert report["tau"] == 0.01 and not report["raised"]
    closed = np.diag([-1.0, 0.5, 0.5, 0.5e-3])  # H_init's HOMO and LUMO degenerate
    _, report = guarded_fock(closed, residual, S, NOCC, tau=0.01)
    assert not report["raised"]


def test_model_config_validates_and_keeps_the_ratio():
    from pyscf_qhflow.model import ModelConfig, QHFlowModel
    cfg = ModelConfig.preset("tiny")
    assert cfg.min_gap_ratio == 0.5
    assert ModelConfig.from_dict({**cfg.to_dict(), "min_gap_ratio": 0.3}).min_gap_ratio == 0.3
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="min_gap_ratio"):
            ModelConfig.from_dict({**cfg.to_dict(), "min_gap_ratio": bad})
    from pyscf_qhflow.guess.predictor import Predictor
    model = QHFlowModel.from_config("tiny", seed=0)
    assert Predictor(model).min_gap_ratio == 0.5
    assert Predictor(model, min_gap_ratio=0.0).min_gap_ratio == 0.0


def test_shipped_model_on_ethanol_needs_no_raise_and_the_hook_reports_it(ethanol):
    """On a QM9-like molecule the guard leaves the prediction exactly as it was."""
    from pyscf_qhflow.hinit import minao_fock
    model = pyscf_qhflow.load_model("default")
    predictor = pyscf_qhflow.Predictor(model)
    assert predictor.min_gap_ratio == 0.5
    hinit = minao_fock(ethanol)
    guarded = predictor.predict(ethanol, hinit=hinit)
    report = guarded.guard
    assert not report["raised"] and report["tau"] == predictor.overlap_damping
    assert report["gap"] > 0.5 * report["gap_hinit"] > 0
    unguarded = pyscf_qhflow.Predictor(model, min_gap_ratio=0.0)
    # the network runs in float32: repeated CPU calls may differ by a few ulps of the
    # residual (seen: 6e-11 Ha), while raising tau to 0.03 moves ethanol's Fock by up to 9e-3 Ha
    np.testing.assert_allclose(unguarded.predict_fock(ethanol, hinit=hinit), guarded.fock,
                               rtol=0, atol=1e-9)
    mf = dft.RKS(ethanol, xc="b3lyp")
    mf.grids.level = 1
    mf.qhflow_model = model
    mf.get_init_guess(key="qhflow")
    assert mf.qhflow_info["gap_guard"]["tau"] == predictor.overlap_damping


def test_the_log_says_when_tau_was_raised_and_warns_when_h_init_is_used(water):
    import io

    from pyscf_qhflow.guess.gap_guard import log_guard_report
    mol = water.copy()
    mol.stdout, mol.verbose = io.StringIO(), 4
    log_guard_report(mol, {"raised": False, "tau": 0.01, "taus_tried": [0.01]})
    assert mol.stdout.getvalue() == ""
    log_guard_report(mol, {"raised": True, "tau": 0.03, "taus_tried": [0.01, 0.03],
                     "gap": 0.185, "gap_hinit": 0.179})
    assert "tau raised to 0.03 (gap 185.0 mHa, H_init gap 179.0 mHa)" in mol.stdout.getvalue()
    with pytest.warns(pyscf_qhflow.QHFlowGuessWarning, match="H_init alone"):
        log_guard_report(mol, {"raised": True, "tau": np.inf, "taus_tried": [0.01, 0.81],
                         "gap": 0.179, "gap_hinit": 0.179})
    assert "WARN" in mol.stdout.getvalue() and "H_init alone" in mol.stdout.getvalue()


def test_ions_are_checked_on_the_neutral_gap(water):
    """The network and H_init describe the neutral closed-shell molecule, whatever the charge."""
    from pyscf_qhflow.guess.gap_guard import neutral_nocc
    from pyscf_qhflow.hinit import minao_fock
    predictor = pyscf_qhflow.Predictor(pyscf_qhflow.load_model("default"))
    hinit = minao_fock(water)  # a function of the geometry only (pyscf_qhflow.hinit)
    reports = {}
    for charge, spin in ((0, 0), (1, 1), (-1, 1)):
        ion = water.copy()
        ion.charge, ion.spin = charge, spin
        ion.build(False, False)
        assert neutral_nocc(ion) == 5
        reports[charge] = predictor.predict(ion, hinit=hinit).guard
    assert reports[1]["gap"] == pytest.approx(reports[0]["gap"], abs=1e-10)
    assert reports[-1]["gap_hinit"] == pytest.approx(reports[0]["gap_hinit"], abs=1e-10)
