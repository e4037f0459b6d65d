"""Error bars of one-shot energies, prior samples, the guess's confidence and its fallback."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from pyscf import dft, scf

from pyscf_qhflow import uncertainty
from pyscf_qhflow.errors import QHFlowGuessWarning
from pyscf_qhflow.guess.hook import resolve_model
from pyscf_qhflow.oneshot import gradient_at, oneshot
from pyscf_qhflow.uncertainty import CALIBRATION, energy_uncertainty

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class FixedFock:
    name = "stand-in"

    def __init__(self, fock):
        self.fock = fock

    def predict_fock(self, mol):
        return self.fock


@pytest.fixture(scope="module")
def shipped():
    return resolve_model(model="default")


def _perturbed_fock(mf, scale=1e-3):
    noise = np.random.default_rng(1).normal(scale=scale, size=(mf.mol.nao, mf.mol.nao))
    return mf.get_fock() + noise + noise.T


def test_uncertainty_present_finite_nonnegative(water):
    mf = scf.RHF(water)
    mf.conv_tol = 1e-11
    e_scf = mf.kernel()
    res = oneshot(mf, forces=False, model=FixedFock(_perturbed_fock(mf)))
    u = res.uncertainty
    assert u.signal == CALIBRATION["default_signal"]
    assert not u.calibrated  # the scales were fitted for the shipped model, not this stand-in
    assert set(u.signals) == {"bracket", "gradient"}  # a stand-in draws no samples
    values = [u.e_tot, u.e_tot_95, u.e_mid, u.e_mid_95, *u.signals.values()]
    assert all(np.isfinite(v) and v >= 0 for v in values)
    assert u.e_tot_95 >= u.e_tot > 0 and res.e_tot_uncertainty == u.e_tot
    assert u.signals["bracket"] == pytest.approx(0.5 * (res.e_tot - res.e_harris))
    assert res.e_tot > e_scf  # the thing the error bar is about is not zero here
    # at self-consistency every signal vanishes
    exact = oneshot(mf, forces=False, model=FixedFock(mf.get_fock())).uncertainty
    assert abs(exact.signals["bracket"]) < 1e-8 and exact.signals["gradient"] < 1e-10
    with pytest.raises(KeyError, match="samples"):
        energy_uncertainty(u.signals, signal="samples")
    with pytest.raises(ValueError, match="unknown uncertainty signal"):
        energy_uncertainty(u.signals, signal="vibes")


def test_gradient_at_matches_oneshot_gradient(water):
    mf = scf.RHF(water)
    mf.kernel()
    model = FixedFock(_perturbed_fock(mf))
    res = oneshot(mf, forces=True, model=model, gradient_jk="exact")
    later = gradient_at(mf, res.mo_energy, res.mo_coeff, res.mo_occ, res.fock, "exact")
    np.testing.assert_allclose(later, res.grad, atol=1e-10)


def test_prior_samples_seeded_and_batched(water, shipped):
    a = shipped.sample_focks(water, 3, seed=5)
    b = shipped.sample_focks(water, 3, seed=5)
    c = shipped.sample_focks(water, 3, seed=6)
    for x, y in zip(a, b):
        # equal draws; torch's CPU kernels sum in a thread-dependent order (~1e-14 Ha)
        np.testing.assert_allclose(x.fock, y.fock, rtol=0, atol=1e-10)
    assert max(np.abs(x.fock - y.fock).max() for x, y in zip(a, c)) > 1e-6
    assert np.abs(a[0].fock - a[1].fock).max() > 1e-6  # the copies drew different priors
    assert np.abs(a[0].fock - shipped.predict(water).fock).max() > 1e-6


def test_oneshot_samples_equal_for_equal_seeds(water, shipped):
    def run(seed):
        mf = dft.RKS(water, xc="b3lyp")
        return oneshot(mf, forces=False, model=shipped, num_samples=3, seed=seed).uncertainty

    u1, u2, u3 = run(0), run(0), run(1)
    # equal draws; the SCF numerics (grids, BLAS summation order) are reproducible only
    # to ~1e-14 relative between runs (1e-13 Ha on the energies whose spread is "samples")
    assert u1.signals.keys() == u2.signals.keys() and u1.calibrated  # the shipped calibration
    for key, value in u1.signals.items():
        assert u2.signals[key] == pytest.approx(value, rel=1e-9, abs=1e-10), key  # Ha
    assert u1.signals["samples"] > 0 and u1.signals["density_spread"] > 0
    assert u1.signals["samples"] != pytest.approx(u3.signals["samples"], rel=1e-6)
    # the prediction itself is seedless
    assert u1.signals["bracket"] == pytest.approx(u3.signals["bracket"], rel=1e-9)
    s = energy_uncertainty(u1.signals, signal="samples")
    assert np.isfinite(s.e_tot) and s.e_tot > 0


def test_oneshot_draws_samples_only_for_the_samples_signal(water, shipped):
    """The shipped signal (chosen on validation: the orbital gradient) needs no prior
    samples: none are drawn by default."""
    plain = oneshot(dft.RKS(water, xc="b3lyp"), forces=False, model=shipped).uncertainty
    assert plain.signal == CALIBRATION["default_signal"] == "gradient"
    assert set(plain.signals) == {"bracket", "gradient"}
    sampled = oneshot(dft.RKS(water, xc="b3lyp"), forces=False, model=shipped,
                      uncertainty_signal="samples").uncertainty
    assert sampled.signal == "samples" and {"samples", "density_spread"} <= set(sampled.signals)
    assert sampled.signals["bracket"] == pytest.approx(plain.signals["bracket"], rel=1e-9)


def test_guess_records_confidence(water, shipped):
    mf = dft.RKS(water, xc="b3lyp")
    mf.qhflow_model = shipped
    mf.verbose = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", QHFlowGuessWarning)
        mf.get_init_guess(key="qhflow")
    conf = mf.qhflow_info["confidence"]
    assert mf.qhflow_info["used"]
    assert conf["num_samples"] == CALIBRATION["num_samples"]
    assert 0 < conf["error_bound_ha"] <= conf["fallback_ha"]


def test_uncalibrated_model_guess_has_no_confidence_and_no_fallback(water, monkeypatch):
    from pyscf_qhflow.model import QHFlowModel
    monkeypatch.setitem(CALIBRATION["guess"], "fallback_ha", 0.0)
    mf = dft.RKS(water, xc="b3lyp")
    mf.grids.level = 1
    mf.qhflow_model = QHFlowModel.from_config("tiny", seed=0)
    mf.get_init_guess(key="qhflow")
    assert mf.qhflow_info["used"] and mf.qhflow_info["confidence"] is None


def test_low_confidence_guess_warns_and_falls_back(water, shipped, monkeypatch):
    monkeypatch.setitem(CALIBRATION["guess"], "fallback_ha", 0.0)
    mf = dft.RKS(water, xc="b3lyp")
    mf.qhflow_model = shipped
    mf.verbose = 0
    with pytest.warns(QHFlowGuessWarning, match="low confidence"):
        dm = mf.get_init_guess(key="qhflow")
    info = mf.qhflow_info
    assert not info["used"] and "low confidence" in info["fallback_reason"]
    assert info["confidence"]["error_bound_ha"] > 0
    np.testing.assert_allclose(dm, mf.get_init_guess(key="minao"), atol=1e-12)


def test_guess_without_confidence_draws_no_samples(water, shipped, monkeypatch):
    """config.guess_confidence = False: the prediction alone, so no low-confidence fallback."""
    from pyscf_qhflow import config
    monkeypatch.setattr(config, "guess_confidence", False)
    monkeypatch.setitem(CALIBRATION["guess"], "fallback_ha", 0.0)  # would fall back
    mf = dft.RKS(water, xc="b3lyp")
    mf.qhflow_model = shipped
    mf.verbose = 0
    dm = mf.get_init_guess(key="qhflow")
    assert mf.qhflow_info["used"] and mf.qhflow_info["confidence"] is None
    monkeypatch.setattr(config, "guess_confidence", True)
    monkeypatch.setitem(CALIBRATION["guess"], "fallback_ha", 1.0)
    mf2 = dft.RKS(water, xc="b3lyp")
    mf2.qhflow_model = shipped
    mf2.verbose = 0
    np.testing.assert_allclose(dm, mf2.get_init_guess(key="qhflow"), atol=1e-10)


def test_density_spread_and_sample_spread_known_values():
    s = np.eye(2)
    dm = np.diag([2.0, 0.0])
    other = np.diag([0.0, 2.0])
    assert uncertainty.density_spread([dm, dm], dm, s) == 0.0
    assert uncertainty.density_spread([other], dm, s) == pytest.approx(np.sqrt(8.0))
    f = np.diag([-1.0, 1.0])
    # Tr(F (D_k - D)) = 0 and 4: standard deviation 2 * sqrt(2)
    assert uncertainty.sample_energy_spread([dm, other], dm, f) == pytest.approx(2 * np.sqrt(2))


def test_cli_prints_error_bar(capsys):
    from pyscf_qhflow.cli.main import main
    assert main(["oneshot", str(EXAMPLES / "water.xyz"), "--no-forces", "--num-samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "+/-" in out and "(68%; 95%" in out and "signal" in out
    assert "calibration: pyscf_qhflow.uncertainty.CALIBRATION)" in out  # fitted for the default


def test_cli_says_where_the_error_bars_come_from(tiny_checkpoint, tmp_path, capsys):
    """A model with a calibration on its card uses it and says so; one without is told
    that the module's scales were fitted for another model."""
    import shutil

    from pyscf_qhflow.checkpoint import write_card
    from pyscf_qhflow.cli.main import main
    weights = tmp_path / "tiny.pt"  # a copy: the card file must not reach other tests
    shutil.copy(tiny_checkpoint, weights)
    argv = ["oneshot", str(EXAMPLES / "water.xyz"), "--no-forces", "--model", str(weights)]
    assert main(argv) == 0
    assert "fitted for another model: not calibrated for this one" in capsys.readouterr().out
    write_card(weights, {"uncertainty": {**uncertainty.CALIBRATION, "model_sha256": "its own"}})
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "calibration: the model card's)" in out and "another model" not in out


def test_conformal_scale_is_the_finite_sample_quantile():
    ratios = np.arange(1.0, 20.0)  # 19 ratios: ceil(20 * 0.95) = 19th smallest, the largest
    assert uncertainty.conformal_scale(ratios, 0.95) == 19.0
    assert uncertainty.conformal_scale(ratios, 0.68) == 14.0  # ceil(20 * 0.68) = 14
    assert uncertainty.conformal_scale(ratios, 0.95) > np.quantile(ratios, 0.95)
    assert uncertainty.conformal_scale([3.0], 0.95) == 3.0  # never past the largest
    with pytest.raises(ValueError, match="at least one"):
        uncertainty.conformal_scale([], 0.95)


def test_choose_signal_prefers_coverage_then_width():
    """A signal proportional to the error covers every left-out molecule with the
    narrowest intervals; a noisy one is passed over, and without any signal
    reaching the coverage the best-covering one is kept."""
    rng = np.random.default_rng(0)
    err = rng.uniform(1e-3, 5e-2, size=40)
    exact = 0.5 * err  # |error| / signal = 2 for every molecule
    noisy = err * rng.uniform(0.2, 5.0, size=40)
    name, scores = uncertainty.choose_signal(err, {"noisy": noisy, "exact": exact})
    assert name == "exact"
    assert scores["exact"][0] == 1.0
    assert scores["exact"][1] == pytest.approx(np.mean(err))
    assert scores["noisy"][1] > scores["exact"][1]
    # heavy-tailed ratios: no signal reaches 95% leave-one-out coverage with 3 molecules
    name, scores = uncertainty.choose_signal(np.array([1.0, 1.0, 1.0]),
                                             {"a": np.array([1.0, 0.5, 0.1]),
                                              "b": np.array([1.0, 1.0, 0.01])})
    assert max(cov for cov, _ in scores.values()) < 0.95
    assert scores[name][0] == max(cov for cov, _ in scores.values())


def test_fit_scales_shape_matches_the_calibration_entry():
    err = np.linspace(1e-3, 2e-2, 25)
    sig = {"bracket": err / 1.5, "gradient": err ** 0.5}
    scales = uncertainty.fit_scales({"e_tot": err, "e_mid": 0.2 * err}, sig, err / 0.05)
    assert set(scales) == {"bracket", "gradient", "guess"}
    assert scales["bracket"]["e_tot"]["scale95"] == pytest.approx(1.5)
    assert scales["bracket"]["e_mid"]["scale68"] == pytest.approx(0.3)
    assert scales["guess"]["scale95"] == pytest.approx(0.05)
    u = energy_uncertainty({"bracket": 0.01}, {"default_signal": "bracket", "scales": scales})
    assert u.e_tot_95 == pytest.approx(0.015)
