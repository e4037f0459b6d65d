"""The prediction pipeline: molecule -> predicted Kohn-Sham Fock matrix.

:func:`predict_fock_batch` (and :func:`predict_fock` for one molecule) runs

1. check the geometry (:func:`pyscf_qhflow.scf_guess.check_input`) and that
   the model serves the molecule (``model.supports``);
2. AO layout: :class:`~pyscf_qhflow.aolayout.MolLayout` in the model's basis layout;
3. H_init = MinAO-density Fock matrix in the model's functional
   (:func:`pyscf_qhflow.hinit.minao_fock`) and the overlap S;
4. batch: records -> padded e3nn-order blocks (:func:`pyscf_qhflow.batching.make_batch`),
   in the model's dtype and device;
5. flow sampling under ``torch.no_grad`` (K Euler steps, see :mod:`pyscf_qhflow.flow`)
   -> residual blocks F* - H_init;
6. blocks -> dense residual in PySCF order (:func:`~pyscf_qhflow.batching.unbatch_fock`);
7. switch the residual off for far atom pairs (:mod:`pyscf_qhflow.residual_range`,
   when ``model.residual_range`` is set), damp it along near-null directions
   of S (``W R W``, :mod:`pyscf_qhflow.overlap_damping`, when
   ``model.overlap_damping > 0``), raising tau for this molecule while its
   predicted HOMO-LUMO gap is implausibly small (:mod:`pyscf_qhflow.gap_guard`,
   when ``model.min_gap_ratio > 0``), then F = H_init + residual,
   symmetrised, float64 (Hartree).

Timings (seconds per step) go into the ``timings`` dict when one is given,
and one gap-guard report per molecule into the ``guard_reports`` list.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from pyscf import gto
from pyscf.lib import logger

from . import hinit
from .aolayout import MolLayout, UnsupportedMoleculeError, ao_atom_indices
from .batching import make_batch, unbatch_fock
from .gap_guard import guarded_fock, neutral_nocc
from .residual_range import limit_residual_range
from .scf_guess import QHFlowGuessWarning, check_input

__all__ = ["hinit_and_overlap", "predict_fock", "predict_fock_batch"]


def hinit_and_overlap(mol: gto.Mole, xc: str) -> tuple[np.ndarray, np.ndarray]:
    """H_init (MinAO-density Fock, Hartree) and S, both (nao, nao) PySCF order."""
    return hinit.minao_fock(mol, xc=xc), hinit.overlap(mol)


def predict_fock(mol: gto.Mole, model, num_steps: int | None = None,
                 timings: dict | None = None, hinit: np.ndarray | None = None,
                 guard_reports: list | None = None) -> np.ndarray:
    """Predicted Fock matrix of ``mol`` (nao, nao), PySCF AO order, Hartree, float64.

    ``hinit``: H_init already computed in the model's protocol (e.g. by the SCF
    object that will use the guess, so its grids and integrals are reused).
    """
    return predict_fock_batch([mol], model, num_steps=num_steps, timings=timings,
                              hinits=None if hinit is None else [hinit],
                              guard_reports=guard_reports)[0]


def predict_fock_batch(mols: list[gto.Mole], model, num_steps: int | None = None,
                       timings: dict | None = None,
                       hinits: list[np.ndarray] | None = None,
                       guard_reports: list | None = None) -> list[np.ndarray]:
    """Predicted Fock matrices of several molecules, run as one network batch."""
    timings = {} if timings is None else timings
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - clock
        clock = now

    # 1. geometry and support
    for mol in mols:
        check_input(mol)
        ok, reason = model.supports(mol)
        if not ok:
            raise UnsupportedMoleculeError(f"model {model.name}: {reason}")
    # 2. AO layout (raises for shells the model's layout cannot hold)
    layouts = [MolLayout.from_mol(mol, model.basis_layout) for mol in mols]
    lap("layout")
    # 3. H_init and S
    if hinits is None:
        hs = [hinit_and_overlap(mol, model.xc) for mol in mols]
    else:
        hs = [(np.asarray(h, dtype=np.float64), hinit.overlap(mol))
              for mol, h in zip(mols, hinits)]
    lap("hinit")
    # 4. batch of padded blocks
    records = [{"Z": lay.atomic_numbers, "pos": mol.atom_coords(unit="Angstrom"),
                "hinit": h, "overlap": s} for mol, lay, (h, s) in zip(mols, layouts, hs)]
    batch, info = make_batch(records, model.basis_layout, model.cutoff, model.pair_cutoff,
                             dtype=model.dtype, device=model.device)
    lap("batch")
    # 5. flow sampling -> residual blocks
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            res_on, res_off = model.sample(batch, num_steps=num_steps)  # [N,P,P], [K,P,P]
    finally:
        model.train(was_training)
    lap("network")
    # 6.-7. dense residual in PySCF order, damped, F = H_init + residual
    residuals = unbatch_fock(res_on, res_off, info)
    tau = float(getattr(model, "overlap_damping", 0.0))
    min_gap_ratio = float(getattr(model, "min_gap_ratio", 0.0))
    residual_range = getattr(model, "residual_range", None)
    focks = []
    for mol, (h, s), r in zip(mols, hs, residuals):
        if residual_range is not None:
            ao_atom = ao_atom_indices(mol)
            r = limit_residual_range(r, mol.atom_coords(unit="Angstrom"), ao_atom,
                                     *residual_range)
        f, report = guarded_fock(h, r, s, neutral_nocc(mol), tau, min_gap_ratio)
        _log_guard(mol, report)
        if guard_reports is not None:
            guard_reports.append(report)
        focks.append(np.ascontiguousarray(0.5 * (f + f.T), dtype=np.float64))
    lap("assemble")
    logger.debug(mols[0], "qhflow predict (%d molecules, model %s): %s", len(mols),
                 model.name, ", ".join(f"{k} {v:.3f} s" for k, v in timings.items()))
    return focks


def _log_guard(mol: gto.Mole, report: dict) -> None:
    """Say when the gap guard had to raise tau, and loudly when it removed the residual."""
    if not report["raised"]:
        return
    gaps = f"H_init gap {report['gap_hinit'] * 1e3:.1f} mHa"
    if np.isinf(report["tau"]):
        msg = (f"qhflow gap guard: no overlap damping up to tau = {report['taus_tried'][-1]:g} "
               f"gives a plausible HOMO-LUMO gap ({gaps}); the guess is H_init alone "
               "(MinAO-density Fock)")
        warnings.warn(msg, QHFlowGuessWarning, stacklevel=3)
        logger.warn(mol, msg)
    else:
        logger.info(mol, "qhflow gap guard: predicted gap too small at tau = %g; tau raised "
                    "to %g (gap %.1f mHa, %s)", report["taus_tried"][0], report["tau"],
                    report["gap"] * 1e3, gaps)
