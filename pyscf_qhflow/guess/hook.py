"""The ``init_guess = 'qhflow'`` hook for PySCF SCF objects.

Importing :mod:`pyscf_qhflow` calls :func:`register`, which wraps
``pyscf.scf.hf.SCF.get_init_guess``.  RHF, UHF and ROHF (and the DFT, density
fitting and Newton variants built on them) all route their initial guess
through that method, so one wrapper serves every class; any other key goes to
PySCF unchanged.

A *predictor* is any object with ``predict_fock(mol) -> ndarray (nao, nao)``
(PySCF AO order, Hartree).  It may also offer ``supports(mol) -> (bool,
reason)``, a ``name``, ``xc`` and ``basis`` (its protocol), and take
``predict_fock(mol, hinit=...)``.  The package's own
:class:`~pyscf_qhflow.guess.predictor.Predictor` offers all of it plus
``prepare``/``predict``, which the hook uses so that one guess checks the
input, the support and the AO layout once each and gets the gap-guard
report with the prediction.  A bare :class:`~pyscf_qhflow.model.QHFlowModel`
is wrapped in a ``Predictor`` with the options stored beside its weights.

Nothing here imports torch: the network loads with the first guess.  The guess density is built as PySCF builds its own
from a Fock matrix: ``mf.eig(F, S)`` -> ``mf.get_occ`` -> ``mf.make_rdm1``
(keeping the mo_coeff/mo_occ tags), with the same spatial Fock matrix for both
spins of UHF/UKS, so the molecule's own charge and spin set the occupations.

Open-shell ions can have several stable UKS minima.  The qhflow start need not
reach the one MinAO's start reaches: for a QM9 cation it reached a minimum
7 mHa lower, both internally stable (``benchmarks/bench_ion_states.py``).  Use
``init_guess='minao'`` where MinAO's state is wanted.
"""
from __future__ import annotations

import os
import time
import warnings

import numpy as np
from pyscf.lib import logger
from pyscf.scf import hf

from .. import config
from ..errors import QHFlowGuessWarning, UnsupportedMoleculeError, check_input
from ..hinit import PROTOCOL_GRID_LEVEL, hinit_beside
from ..uncertainty import (calibration_for, closed_shell_density, density_spread,
                           guess_error_bound)

__all__ = ["resolve_model", "predict_fock", "prepare", "predict_beside", "density_from_fock", "guess_confidence", "init_guess_by_qhflow", "register", "GUESS_KEY"]

GUESS_KEY = "qhflow"


def resolve_model(mf=None, model=None):
    """Pick the predictor: ``model`` > ``mf.qhflow_model`` > ``config.default_model``
    > the shipped weights (loaded once per process and kept in ``config.default_model``).

    A checkpoint path or packaged name is loaded (once per process and file);
    a :class:`~pyscf_qhflow.model.QHFlowModel` is wrapped in a
    :class:`~pyscf_qhflow.guess.predictor.Predictor`.
    """
    if model is None and mf is not None:
        model = getattr(mf, "qhflow_model", None)
    if model is None:
        model = config.default_model
        if model is None:
            model = config.default_model = _as_predictor("default")
        elif not hasattr(model, "predict_fock") or isinstance(model, str):
            model = config.default_model = _as_predictor(model)
    return _as_predictor(model)


def _as_predictor(model):
    if isinstance(model, (str, os.PathLike)):
        return _load_cached(str(model))
    if _is_network(model):
        from .predictor import Predictor
        return Predictor(model)
    if not callable(getattr(model, "predict_fock", None)):
        raise TypeError(f"{type(model).__name__} is not a predictor: it has no "
                        "predict_fock(mol) method")
    return model


def _is_network(model) -> bool:
    # a QHFlowModel without importing torch for every other predictor
    return hasattr(model, "sample") and hasattr(model, "basis_layout")


_LOADED: dict[tuple[str, float], object] = {}


def _load_cached(name_or_path: str):
    """A Predictor for a checkpoint, loaded once per process (keyed by path and mtime)."""
    from ..checkpoint import load_model, resolve_weights_path
    path = resolve_weights_path(name_or_path)
    key = (str(path.resolve()), path.stat().st_mtime)
    if key not in _LOADED:
        from .predictor import Predictor
        _LOADED[key] = Predictor(load_model(path))
    return _LOADED[key]


def _model_name(model) -> str:
    return str(getattr(model, "name", type(model).__name__))


def predict_fock(mol, model=None) -> np.ndarray:
    """Predicted Kohn-Sham Fock matrix of ``mol`` (nao, nao), PySCF AO order, Hartree.

    Raises :class:`UnsupportedMoleculeError` when the model cannot serve ``mol``.
    """
    model = resolve_model(model=model)
    layout = prepare(model, mol)
    if layout is not None:
        return _checked_fock(model.predict(mol, layout=layout).fock, mol)
    return _checked_fock(model.predict_fock(mol), mol)


def prepare(model, mol):
    """Check ``mol`` once for ``model``: input, support, and (for a Predictor) the AO layout.

    Returns the layout from ``model.prepare`` when the predictor has one,
    else ``None`` after :func:`~pyscf_qhflow.errors.check_input` and
    ``model.supports``; raises ``ValueError`` or
    :class:`~pyscf_qhflow.errors.UnsupportedMoleculeError`.
    """
    if callable(getattr(model, "prepare", None)):
        return model.prepare(mol)
    check_input(mol)
    supports = getattr(model, "supports", None)
    if supports is not None:
        ok, reason = supports(mol)
        if not ok:
            raise UnsupportedMoleculeError(reason)
    return None


def _checked_fock(fock, mol) -> np.ndarray:
    fock = np.asarray(fock, dtype=np.float64)
    nao = mol.nao_nr()
    if fock.shape != (nao, nao):
        raise ValueError(f"predictor returned shape {fock.shape}, expected ({nao}, {nao})")
    if not np.all(np.isfinite(fock)):
        raise ValueError("predictor returned a Fock matrix with NaN or inf entries")
    return 0.5 * (fock + fock.T)


def density_from_fock(mf, mol, fock: np.ndarray):
    """Guess density from a spatial Fock matrix, through the SCF object's own methods."""
    s1e = mf.get_ovlp(mol)
    dm_ndim = _dm_ndim(mf)
    f = np.asarray((fock, fock)) if dm_ndim == 3 else fock
    mo_energy, mo_coeff = mf.eig(f, s1e)
    mo_occ = mf.get_occ(mo_energy, mo_coeff)
    dm = mf.make_rdm1(mo_coeff, mo_occ)
    nelec_guess = float(np.einsum("...ij,ji->...", np.asarray(dm), s1e).real.sum())
    return dm, nelec_guess


def _model_basis_mol(model, mol):
    """``mol`` rebuilt in the model's basis when the model declares a different one."""
    basis = getattr(model, "basis", None)
    if basis is None:
        return None
    ref = mol.copy()
    ref.basis = basis
    ref.build(False, False)
    return None if ref._basis == mol._basis else ref


def _projected_density(mf, mol, mol_model, fock_model: np.ndarray):
    """Occupied orbitals of the model-basis Fock, projected into ``mol``'s basis.

    The alpha and beta occupied spaces (aufbau with ``mol.nelec``) are projected
    with :func:`pyscf.scf.addons.project_mo_nr2nr` and re-orthonormalised in
    the new overlap, so the density holds exactly ``mol.nelectron`` electrons.
    """
    import scipy.linalg
    from pyscf.scf import addons, rohf, uhf

    _, c_model = scipy.linalg.eigh(fock_model, mol_model.intor_symmetric("int1e_ovlp"))
    nalpha, nbeta = mol.nelec
    c_proj = addons.project_mo_nr2nr(mol_model, c_model[:, :max(nalpha, nbeta)], mol)
    s1e = mf.get_ovlp(mol)

    def occupied_dm(n: int) -> np.ndarray:
        c = c_proj[:, :n]
        w, v = np.linalg.eigh(c.T @ s1e @ c)
        c = c @ (v / np.sqrt(w)) @ v.T  # Loewdin: C^T S C = 1
        return c @ c.T

    if isinstance(mf, (uhf.UHF, rohf.ROHF)):
        dm = np.array([occupied_dm(nalpha), occupied_dm(nbeta)])
    else:
        dm = occupied_dm(nalpha) + occupied_dm(nbeta)
    nelec_guess = float(np.einsum("...ij,ji->...", dm, s1e).sum())
    return dm, nelec_guess


def predict_beside(mf, mol, model, layout=None, share: bool = True, num_samples: int = 0,
                   seed: int = 0):
    """The predicted Fock matrix of ``mol`` for the SCF object ``mf``, checked and symmetric.

    ``layout``: from :func:`prepare` (``None`` for a predictor without one).
    With ``share``, H_init is built on ``mf``'s grids and in-core integrals
    (:func:`_hinit_for_guess`), which the SCF or one-shot evaluation then
    reuses.  ``num_samples > 0`` also draws that many Fock matrices from
    seeded prior starts on the same H_init
    (:meth:`~pyscf_qhflow.guess.predictor.Predictor.sample_focks`, one network
    batch), for predictors that have it.  Returns ``(fock, gap-guard report or
    None, what was shared, list of sampled Fock matrices)``.
    """
    hinit, shared = _hinit_for_guess(mf, mol, model) if share else (None, [])
    samples = []
    if layout is not None:
        prediction = model.predict(mol, hinit=hinit, layout=layout)
        fock, guard = prediction.fock, prediction.guard
        if num_samples > 0 and callable(getattr(model, "sample_focks", None)):
            # the prediction's own H_init when it built one (another basis): not twice
            samples = [_checked_fock(p.fock, mol) for p in
                       model.sample_focks(mol, num_samples, seed, hinit=prediction.hinit,
                                          layout=layout)]
    else:
        fock = model.predict_fock(mol) if hinit is None else model.predict_fock(mol, hinit=hinit)
        guard = None
    return _checked_fock(fock, mol), guard, shared, samples


def _hinit_for_guess(mf, mol, model) -> tuple[np.ndarray | None, list[str]]:
    """H_init beside ``mf`` (:func:`pyscf_qhflow.hinit.hinit_beside`) when the predictor takes one.

    On a grid of level ``config.hinit_grid_level`` (None: the protocol's level 3).

    ``(None, [])`` when the predictor takes no ``hinit`` or declares no ``xc``:
    it then builds what it needs itself.
    """
    import inspect
    try:
        if "hinit" not in inspect.signature(model.predict_fock).parameters:
            return None, []
    except (TypeError, ValueError):
        return None, []
    xc = getattr(model, "xc", None)
    if xc is None:
        return None, []
    # a coarser grid for the network's input only (config.hinit_grid_level); the SCF
    # then builds its own grid, as it would without the guess
    return hinit_beside(mf, mol, xc, grid_level=config.hinit_grid_level or PROTOCOL_GRID_LEVEL)


def _dm_ndim(mf) -> int:
    """3 for unrestricted objects (alpha and beta density matrices), else 2."""
    from pyscf.scf import uhf
    return 3 if isinstance(mf, uhf.UHF) else 2


def _fallback(mf, mol, reason: str):
    if config.on_unsupported == "raise":
        raise UnsupportedMoleculeError(reason)
    msg = f"qhflow guess not used ({reason}); falling back to the minao guess"
    warnings.warn(msg, QHFlowGuessWarning, stacklevel=4)
    logger.warn(mf, msg)
    mf.qhflow_info = {"used": False, "fallback_reason": reason}
    return _ORIGINAL_GET_INIT_GUESS(mf, mol, "minao")


def init_guess_by_qhflow(mf, mol=None, model=None):
    """Initial density from the network's predicted Fock matrix.

    Steps: pick the predictor (:func:`resolve_model`) -> check it supports
    ``mol`` -> predict F (PySCF order, Hartree) -> ``mf.eig(F, S)`` ->
    ``mf.get_occ`` -> ``mf.make_rdm1``.  Records ``mf.qhflow_info`` (model,
    inference seconds, electron count of the guess, ``confidence``: the
    spread of K prior samples and the calibrated bound on the guess's energy
    error, :func:`guess_confidence`; only for a model the calibration was
    fitted for, else ``None``) and logs it.  A guess whose bound exceeds the
    calibration's ``fallback_ha`` warns and uses minao.  When the
    model cannot serve the molecule it warns and uses minao, or raises under
    ``pyscf_qhflow.config.on_unsupported = 'raise'``; never silently.
    """
    config.check()
    if mol is None:
        mol = mf.mol
    model = resolve_model(mf, model)
    name = _model_name(model)
    # a model trained in another basis predicts in its own basis; the density is projected
    mol_model = _model_basis_mol(model, mol)
    target = mol if mol_model is None else mol_model
    calibration, calibrated = calibration_for(model)
    try:
        layout = prepare(model, target)
        t0 = time.perf_counter()
        fock, guard, hinit_shared, samples = predict_beside(
            mf, target, model, layout, share=mol_model is None,
            num_samples=(int(calibration.get("num_samples", 0))
                         if calibrated and config.guess_confidence else 0), seed=0)
        inference_s = time.perf_counter() - t0
    except UnsupportedMoleculeError as err:
        reason = str(err)
        if not reason.startswith(f"model {name}"):
            reason = f"model {name}: {reason}"
        return _fallback(mf, mol, reason)
    _log_protocol_differences(mf, model, mol_model)

    if mol_model is None:
        dm, nelec_guess = density_from_fock(mf, mol, fock)
    else:
        dm, nelec_guess = _projected_density(mf, mol, mol_model, fock)
    if abs(nelec_guess - mol.nelectron) > 1e-6:
        return _fallback(mf, mol, f"the predicted density holds {nelec_guess:.6f} "
                                  f"electrons, the molecule {mol.nelectron}")
    confidence = guess_confidence(target, fock, samples, calibration)
    info = {"used": True, "model": name, "inference_s": inference_s,
            "hinit_shared_with_scf": hinit_shared,
            "gap_guard": guard,
            "nelec": nelec_guess,
            "projected_from": None if mol_model is None else mol_model.basis,
            "confidence": confidence}
    if confidence is not None:
        logger.info(mf, "qhflow guess confidence: density spread %.2e e over %d prior "
                    "samples, guess energy error < %.2e Ha (95%%; fallback above %.2e Ha)",
                    confidence["density_spread"], confidence["num_samples"],
                    confidence["error_bound_ha"], confidence["fallback_ha"])
        if confidence["error_bound_ha"] > confidence["fallback_ha"]:
            reason = (f"model {name}: low confidence, guess energy error bound "
                      f"{confidence['error_bound_ha']:.3g} Ha above "
                      f"{confidence['fallback_ha']:.3g} Ha")
            msg = f"qhflow guess not used ({reason}); falling back to the minao guess"
            warnings.warn(msg, QHFlowGuessWarning, stacklevel=3)
            logger.warn(mf, msg)
            mf.qhflow_info = {**info, "used": False, "fallback_reason": reason}
            return _ORIGINAL_GET_INIT_GUESS(mf, mol, "minao")
    mf.qhflow_info = info
    logger.info(mf, "qhflow initial guess from model %s (inference %.3f s)",
                name, inference_s)
    return dm


def guess_confidence(mol, fock: np.ndarray, samples: list, calibration: dict) -> dict | None:
    """The guess's confidence from prior samples of its Fock matrix, or ``None`` without samples.

    Density spread of the samples around the guess's density (closed-shell
    aufbau of the neutral molecule, :func:`pyscf_qhflow.uncertainty.density_spread`)
    and the calibrated 95% bound on the guess's energy error it implies
    (:func:`pyscf_qhflow.uncertainty.guess_error_bound`).
    """
    if len(samples) < 1:
        return None
    from .gap_guard import neutral_nocc
    s1e = mol.intor_symmetric("int1e_ovlp")
    nocc = neutral_nocc(mol)
    dm = closed_shell_density(fock, s1e, nocc)
    spread = density_spread([closed_shell_density(f, s1e, nocc) for f in samples], dm, s1e)
    return {"density_spread": spread, "num_samples": len(samples),
            "error_bound_ha": guess_error_bound(spread, calibration),
            "fallback_ha": float(calibration["guess"]["fallback_ha"])}


def _log_protocol_differences(mf, model, mol_model) -> None:
    """Say in the log where the user's calculation differs from the model's protocol."""
    if mol_model is not None:
        logger.info(mf, "qhflow: model basis %s differs from mol.basis; the predicted "
                    "occupied orbitals are projected into mol.basis", mol_model.basis)
    model_xc = getattr(model, "xc", None)
    user_xc = getattr(mf, "xc", "hf")
    if model_xc is not None and str(model_xc).lower() != str(user_xc).lower():
        logger.info(mf, "qhflow: the model was trained on %s Fock matrices; this "
                    "calculation uses %s (the predicted density still seeds it)",
                    model_xc, user_xc)


_ORIGINAL_GET_INIT_GUESS = hf.SCF.get_init_guess


def _get_init_guess(self, mol=None, key="minao", **kwargs):
    if isinstance(key, str) and key.lower() == GUESS_KEY:
        return init_guess_by_qhflow(self, mol)
    return _ORIGINAL_GET_INIT_GUESS(self, mol, key, **kwargs)


_get_init_guess.__doc__ = (_ORIGINAL_GET_INIT_GUESS.__doc__ or "") + (
    "\n\npyscf_qhflow: key='qhflow' builds the guess from the predicted Fock matrix "
    "(see pyscf_qhflow.guess.hook.init_guess_by_qhflow).")


def register() -> None:
    """Install the ``'qhflow'`` key on PySCF's SCF classes (idempotent)."""
    hf.SCF.get_init_guess = _get_init_guess
    hf.SCF.init_guess_by_qhflow = init_guess_by_qhflow
    # class attributes: PySCF's check_sanity accepts them on every subclass
    hf.SCF.qhflow_model = None
    hf.SCF.qhflow_info = None
    hf.SCF._keys = set(hf.SCF._keys) | {"qhflow_model", "qhflow_info"}
