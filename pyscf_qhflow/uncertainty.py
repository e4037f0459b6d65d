"""Error bars for one-shot energies and the guess's confidence.

Three signals come with a one-shot evaluation (:func:`pyscf_qhflow.oneshot.oneshot`):

``bracket``
    half the width of ``[E_Harris, E_KS]`` (Hartree), free from the one Fock
    build at the predicted density D.  Both energies are second order in the
    density error, with opposite signs in the linear-response regime, so the
    width measures the error itself.
``gradient``
    ``||g||^2`` (Hartree^2) of the occupied-virtual orbital gradient
    ``g = C_v^T F[D] C_o`` at the predicted orbitals (PySCF's ``mf.get_grad``),
    also free.  The energy error is quadratic in the density error, so its
    square is the quantity to scale.
``samples``
    the standard deviation over K flow samples started from seeded prior
    draws (:meth:`~pyscf_qhflow.guess.predictor.Predictor.sample_focks`, one
    network batch) of the first-order energy change ``Tr(F[D] (D_k - D))``:
    no Fock build per sample (D is not stationary, so the first-order term
    dominates ``E_KS[D_k] - E_KS[D]``).  Needs a predictor with
    ``sample_focks`` and ``num_samples > 0``.

A calibrated uncertainty is ``scale * signal``: ``scale68`` and ``scale95`` are
split-conformal quantiles of ``|error| / signal`` on the validation split
(:func:`conformal_scale`: the ceil((n+1) q)-th smallest of n ratios, so that a
new molecule exchangeable with them is covered with probability >= q),
fitted by :func:`fit_scales` (``benchmarks/bench_uncertainty.py``) for the
Kohn-Sham energy ``e_tot`` and for the midpoint ``e_mid`` separately.  Which
signal a model's error bars use is chosen on validation too, by a rule fixed
in code (:func:`choose_signal`), never after looking at test molecules.  The 68% half-width is
the "1-sigma-like" number reported as the uncertainty; the 95% half-width is
given beside it (it is not 1.96 sigma: the errors are not Gaussian).

The guess (:func:`pyscf_qhflow.guess.hook.init_guess_by_qhflow`) has no Fock
build at D, so its confidence is the sample spread of the density,
``sqrt(mean_k ||D_k - D||_S^2)`` (electrons; :func:`density_spread`),
turned into a bound on the guess's energy error by the calibrated ``guess``
entry; above ``guess.fallback_ha`` the guess falls back to MinAO.

Calibration constants live in :data:`CALIBRATION` (one place); a model card
with an ``"uncertainty"`` entry of the same shape overrides them for that
model (:func:`calibration_for`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["CALIBRATION", "SIGNALS", "EnergyUncertainty", "calibration_for", "calibration_source",
           "choose_signal", "closed_shell_density", "conformal_scale", "density_spread",
           "fit_scales",
           "orbital_gradient_sq", "sample_energy_spread", "energy_uncertainty",
           "guess_error_bound"]

SIGNALS = ("bracket", "gradient", "samples")
ESTIMATES = ("e_tot", "e_mid")

# Fitted by benchmarks/bench_uncertainty.py on all 53 validation molecules of
# ../shared/data (session 26) for the shipped default model (weights/default.pt,
# the tenth stage; tensor sha256 in "model_sha256"): split-conformal 68%/95%
# quantiles of |error| / signal (fit_scales), the signal chosen there by
# choose_signal, printed by that script as "Calibration (fitted on val)" and
# written to OUT/scales.json. Coverage on the test split and outside QM9:
# benchmarks/RESULTS.md, section 26 (section 21: the fifth stage's).
CALIBRATION: dict = {
    "default_signal": "gradient",
    "model_sha256": "49d043e6eac53028758fdeec0d24e12615729314b9302473b4f665107ff0730f",
    "num_samples": 4,
    "scales": {
        "bracket": {"e_tot": {"scale68": 1.469, "scale95": 1.639},
                    "e_mid": {"scale68": 0.4691, "scale95": 0.6388}},
        "gradient": {"e_tot": {"scale68": 0.2573, "scale95": 0.2854},
                     "e_mid": {"scale68": 0.07766, "scale95": 0.1033}},
        "samples": {"e_tot": {"scale68": 104.9, "scale95": 188.9},
                    "e_mid": {"scale68": 26.82, "scale95": 64.57}},
    },
    # bound on the guess's energy error E_KS[D] - E_SCF (Hartree per electron
    # of density spread, 95% level) and the bound above which the guess falls
    # back to MinAO: 0.1 Ha, a twelfth of MinAO's own smallest guess error on
    # the test molecules measured (1.2 Ha, section 21; the qhflow guess's
    # largest 4.1 mHa)
    "guess": {"scale95": 0.09938, "fallback_ha": 0.1},
    "benchmark": "benchmarks/bench_uncertainty.py --shards ../shared/data --limit 53 --minao 0",
}


def calibration_for(model) -> tuple[dict, bool]:
    """``(calibration, fitted for this model)`` for ``model``.

    Its card's ``"uncertainty"`` entry when there is one; else
    :data:`CALIBRATION`, fitted for the model whose tensor sha256 it names.
    Any other predictor (a stand-in, an untrained or retrained network) gets
    :data:`CALIBRATION`'s scales for its error bars, flagged as not fitted for
    it, and no guess fallback.
    """
    own = _card_calibration(model)
    if own is not None:
        return own, True
    card = getattr(model, "card", None)
    sha = card.get("sha256") if isinstance(card, dict) else None
    return CALIBRATION, sha is not None and sha == CALIBRATION["model_sha256"]


def calibration_source(model) -> str:
    """Where :func:`calibration_for` takes ``model``'s scales from, in words (for the CLI)."""
    if _card_calibration(model) is not None:
        return "the model card's"
    if calibration_for(model)[1]:
        return "pyscf_qhflow.uncertainty.CALIBRATION"
    return ("pyscf_qhflow.uncertainty.CALIBRATION, fitted for another model: "
            "not calibrated for this one")


def _card_calibration(model) -> dict | None:
    """The calibration on ``model``'s card (its ``"uncertainty"`` entry), if any."""
    card = getattr(model, "card", None)
    if isinstance(card, dict) and isinstance(card.get("uncertainty"), dict):
        return card["uncertainty"]
    return None


@dataclass
class EnergyUncertainty:
    """Calibrated half-widths (Hartree) of the one-shot energies, and the raw signals."""

    signal: str  # which signal the half-widths are scaled from
    e_tot: float  # 68% half-width around OneShotResult.e_tot
    e_tot_95: float  # 95% half-width around e_tot
    e_mid: float  # 68% half-width around OneShotResult.e_mid
    e_mid_95: float  # 95% half-width around e_mid
    signals: dict = field(default_factory=dict)  # every signal computed, raw (see module doc)
    calibrated: bool = True  # False: the scales were fitted for another model


def orbital_gradient_sq(mf, mo_coeff: np.ndarray, mo_occ: np.ndarray,
                        fock: np.ndarray) -> float:
    """``||g||^2`` of PySCF's orbital gradient at ``mo_coeff`` with ``fock`` = F[D] (Hartree^2)."""
    g = np.asarray(mf.get_grad(mo_coeff, mo_occ, fock))
    return float(g @ g)


def closed_shell_density(fock: np.ndarray, overlap: np.ndarray, nocc: int) -> np.ndarray:
    """``2 C_occ C_occ^T`` of ``F C = S C e`` with ``nocc`` doubly occupied levels (nao, nao)."""
    s_val, s_vec = np.linalg.eigh(overlap)
    keep = s_val > 1e-8
    x = s_vec[:, keep] / np.sqrt(s_val[keep])  # [nao, nmo], X^T S X = 1
    _, c = np.linalg.eigh(x.T @ fock @ x)
    c_occ = x @ c[:, :nocc]
    return 2.0 * c_occ @ c_occ.T


def density_spread(dms: list[np.ndarray], dm: np.ndarray, overlap: np.ndarray) -> float:
    """``sqrt(mean_k Tr((D_k - D) S (D_k - D) S))``: RMS distance of samples from D (electrons)."""
    if not dms:
        return 0.0
    sq = []
    for d in dms:
        a = (d - dm) @ overlap  # Tr(A A) as a sum: a 4-operand einsum was O(nao^4)
        sq.append(float(np.sum(a * a.T)))
    return float(np.sqrt(max(np.mean(sq), 0.0)))


def sample_energy_spread(dms: list[np.ndarray], dm: np.ndarray, fock_at_dm: np.ndarray) -> float:
    """Standard deviation over samples of ``Tr(F[D] (D_k - D))`` (Hartree; 0 for < 2 samples)."""
    if len(dms) < 2:
        return 0.0
    de = [float(np.einsum("ij,ji->", d - dm, fock_at_dm)) for d in dms]
    return float(np.std(de, ddof=1))


def energy_uncertainty(signals: dict, calibration: dict | None = None,
                       signal: str | None = None, calibrated: bool = True) -> EnergyUncertainty:
    """Scale one signal into half-widths with ``calibration`` (default :data:`CALIBRATION`).

    ``signal`` defaults to the calibration's ``default_signal``; it must be in
    ``signals`` (a signal that was not computed raises ``KeyError``).
    """
    cal = CALIBRATION if calibration is None else calibration
    name = cal["default_signal"] if signal is None else signal
    if name not in SIGNALS:
        raise ValueError(f"unknown uncertainty signal {name!r}; one of {SIGNALS}")
    if name not in signals:
        raise KeyError(f"signal {name!r} was not computed (samples need num_samples > 0 "
                       "and a predictor with sample_focks)")
    x = abs(float(signals[name]))
    s = cal["scales"][name]
    return EnergyUncertainty(name, s["e_tot"]["scale68"] * x, s["e_tot"]["scale95"] * x,
                             s["e_mid"]["scale68"] * x, s["e_mid"]["scale95"] * x,
                             dict(signals), calibrated)


def guess_error_bound(spread: float, calibration: dict | None = None) -> float:
    """95% bound (Hartree) on the guess's energy error from its density spread (electrons)."""
    cal = CALIBRATION if calibration is None else calibration
    return float(cal["guess"]["scale95"]) * float(spread)


def conformal_scale(ratios: np.ndarray, q: float) -> float:
    """Split-conformal ``q`` quantile of ``ratios`` (|error| / signal on calibration molecules).

    The ceil((n+1) q)-th smallest of the n ratios (the largest when that
    exceeds n): for a new molecule exchangeable with the calibration ones,
    ``|error| <= scale * signal`` holds with probability at least ``q``.  The
    plain ``np.quantile`` is the in-sample q-quantile and covers new molecules
    less often; with a signal whose ratio barely varies (the bracket) the
    difference decides the coverage.
    """
    r = np.sort(np.asarray(ratios, dtype=float))
    if r.size == 0:
        raise ValueError("conformal_scale needs at least one calibration ratio")
    k = int(np.ceil((r.size + 1) * q))
    return float(r[min(max(k, 1), r.size) - 1])


def _ratios(errors: np.ndarray, signal: np.ndarray) -> np.ndarray:
    return np.abs(errors) / np.maximum(np.abs(signal), 1e-300)


def fit_scales(errors: dict[str, np.ndarray], signals: dict[str, np.ndarray],
               density_spread: np.ndarray | None = None) -> dict:
    """``{signal: {estimate: {scale68, scale95}}}`` (+ ``guess``) from validation molecules.

    ``errors[estimate]``: signed one-shot error (Hartree) per molecule, for
    each of :data:`ESTIMATES`; ``signals[name]``: the raw signal per molecule.
    ``density_spread`` (electrons) fits the guess's 95% bound on its E_KS error.
    """
    scales: dict = {}
    for name, x in signals.items():
        ratios = {e: _ratios(errors[e], x) for e in ESTIMATES}
        scales[name] = {e: {"scale68": conformal_scale(r, 0.68), "scale95": conformal_scale(r, 0.95)}
                        for e, r in ratios.items()}
    if density_spread is not None:
        scales["guess"] = {"scale95": conformal_scale(
            _ratios(errors["e_tot"], density_spread), 0.95)}
    return scales


def choose_signal(errors: np.ndarray, signals: dict[str, np.ndarray],
                  q: float = 0.95) -> tuple[str, dict]:
    """The signal a model's error bars use, chosen on validation molecules alone.

    Rule (fixed before any test molecule is looked at): leave each validation
    molecule out in turn, fit the conformal ``q`` scale on the others and ask
    whether the left-out molecule's ``|errors|`` is inside the interval.  Among
    the signals whose leave-one-out coverage is at least ``q``, keep the one
    with the narrowest mean half-width; when none reaches ``q``, the one with
    the highest coverage (then the narrowest).  ``errors``: the Kohn-Sham
    energy errors (Hartree).  Returns ``(name, {name: (coverage, mean
    half-width in Hartree)})``.
    """
    err = np.abs(np.asarray(errors, dtype=float))
    if err.size < 2:
        raise ValueError("choose_signal needs at least two validation molecules")
    scores = {}
    for name, x in signals.items():
        x = np.abs(np.asarray(x, dtype=float))
        r = _ratios(err, x)
        widths = np.array([conformal_scale(np.delete(r, i), q) * x[i] for i in range(err.size)])
        scores[name] = (float(np.mean(err <= widths)), float(np.mean(widths)))
    good = [n for n, (cov, _) in scores.items() if cov >= q]
    if good:
        best = min(good, key=lambda n: scores[n][1])
    else:
        best = min(scores, key=lambda n: (-scores[n][0], scores[n][1]))
    return best, scores
