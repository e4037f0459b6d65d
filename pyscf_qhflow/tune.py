"""Choosing the inference options for a set of weights, on labelled molecules (a release step).

The overlap damping tau (:mod:`pyscf_qhflow.guess.overlap_damping`) and the
gap guard's ``min_gap_ratio`` (:mod:`pyscf_qhflow.guess.gap_guard`) act on the
network's raw residual R = F - H_init after it is predicted.  Both tuners
therefore predict each molecule once, with post-processing off
(:attr:`pyscf_qhflow.guess.predictor.Prediction.residual`), and score every
candidate setting on that same R:

* :func:`damping_rows` -- for every tau of a grid, F_tau = H_init + W R W
  scored with :func:`pyscf_qhflow.benchmark.fock_metrics` against the label;
  :func:`choose_damping` picks the lowest mean error of the guess density
  (what an SCF start hands over);
* :func:`gap_rows` -- the HOMO-LUMO gap of the label and of the prediction
  (tau = 0 and the stored tau) divided by H_init's gap, and the tau the guard
  settles on.  A threshold is safe when no label ratio lies below it and
  useful when broken predictions do.

``qhflow tune damping|gap-guard`` runs them (:mod:`pyscf_qhflow.cli.tune`);
``--write`` stores the chosen tau beside the weights
(:func:`pyscf_qhflow.checkpoint.update_checkpoint`: the tensors stay
byte-identical).
"""
from __future__ import annotations

import statistics

import numpy as np
from tqdm.auto import tqdm

from . import keys
from .benchmark import fock_metrics
from .data.shardfile import build_mol
from .guess.gap_guard import guarded_fock, homo_lumo_gap, neutral_nocc
from .guess.overlap_damping import damp_residual
from .guess.predictor import Predictor
from .units import HARTREE_TO_UHA

__all__ = ["DAMPING_GRID", "damping_rows", "choose_damping", "damping_table", "gap_rows",
           "gap_table", "raw_predictor"]

DAMPING_GRID = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
DAMPING_COLUMNS = ("h_mae_uha", "occ_eps_mae_mha", "gap_err_mha", "occ_cosine", "density_err")


def raw_predictor(model) -> Predictor:
    """The model with post-processing off: its predictions carry the raw residual only."""
    return Predictor(model, overlap_damping=0.0, min_gap_ratio=0.0)


def damping_rows(dataset, indices, model, taus=DAMPING_GRID, progress: bool = True
                 ) -> list[dict]:
    """One row per (molecule, tau), plus the H_init baseline (``tau = 'hinit'``)."""
    raw = raw_predictor(model)
    rows = []
    for i in tqdm(list(indices), desc="damping", disable=not progress):
        rec = dataset[i]
        mol = build_mol(rec[keys.Z], rec[keys.POS], raw.basis)
        pred = raw.predict(mol, hinit=rec["hinit"])
        nocc = mol.nelectron // 2
        name = f"qm9_{int(rec['qm9_index'])}"
        for tau in taus:
            fock = pred.hinit + damp_residual(pred.residual, pred.overlap, tau)
            rows.append({"molecule": name, "tau": tau,
                         **fock_metrics(fock, rec["fock"], pred.overlap, nocc)})
        rows.append({"molecule": name, "tau": "hinit",
                     **fock_metrics(pred.hinit, rec["fock"], pred.overlap, nocc)})
    return rows


def choose_damping(rows: list[dict]) -> float:
    """The tau with the lowest mean density error of the guess."""
    taus = [t for t in dict.fromkeys(r["tau"] for r in rows) if t != "hinit"]
    return min(taus, key=lambda t: statistics.mean(r["density_err"] for r in rows
                                                    if r["tau"] == t))


def damping_table(rows: list[dict]) -> str:
    """Mean metrics per tau (markdown)."""
    lines = ["| tau | molecules | H MAE (µHa) | occ. ε MAE (mHa) | gap err (mHa) | "
             "occ. cosine | density err (mean) | (median) | (max) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for value in dict.fromkeys(r["tau"] for r in rows):
        sel = [r for r in rows if r["tau"] == value]
        m = {k: statistics.mean(r[k] for r in sel) for k in DAMPING_COLUMNS}
        dens = [r["density_err"] for r in sel]
        label = "H_init alone" if value == "hinit" else f"{value:g}"
        lines.append(f"| {label} | {len(sel)} | {m['h_mae_uha']:.1f} | "
                     f"{m['occ_eps_mae_mha']:.2f} | {m['gap_err_mha']:.2f} | "
                     f"{m['occ_cosine']:.3f} | {m['density_err']:.4f} | "
                     f"{statistics.median(dens):.4f} | {max(dens):.3f} |")
    return "\n".join(lines)


def gap_rows(molecules, model, progress: bool = True) -> list[dict]:
    """Gap ratios for ``(set, name, mol, hinit or None, label or None)`` tuples.

    Each row: ``gap_hinit_mha``, ``ratio_label`` (None without a label),
    ``ratio_pred_tau0``, ``ratio_pred`` (at the stored tau, before the guard),
    ``guard_tau`` (what the guard settles on with the stored ratio) and the
    raw residual's largest element, ``residual_max_uha``.
    """
    stored = Predictor(model)
    tau, ratio = stored.overlap_damping, stored.min_gap_ratio
    raw = raw_predictor(model)
    rows = []
    for set_name, name, mol, hinit, label in tqdm(list(molecules), desc="gap guard",
                                                  disable=not progress):
        pred = raw.predict(mol, hinit=hinit)
        nocc = neutral_nocc(mol)
        gap_hinit = homo_lumo_gap(pred.hinit, pred.overlap, nocc)
        damped = pred.hinit + damp_residual(pred.residual, pred.overlap, tau)
        _, report = guarded_fock(pred.hinit, pred.residual, pred.overlap, nocc, tau, ratio)
        rows.append({
            "set": set_name, "molecule": name, "natm": mol.natm,
            "gap_hinit_mha": 1e3 * gap_hinit,
            "ratio_label": (None if label is None
                            else homo_lumo_gap(label, pred.overlap, nocc) / gap_hinit),
            "ratio_pred_tau0": homo_lumo_gap(pred.hinit + pred.residual, pred.overlap,
                                             nocc) / gap_hinit,
            "ratio_pred": homo_lumo_gap(damped, pred.overlap, nocc) / gap_hinit,
            "guard_tau": report["tau"],
            "residual_max_uha": float(np.abs(pred.residual).max() * HARTREE_TO_UHA)})
    return rows


def _stats(values: list[float]) -> str:
    v = np.asarray(values)
    return f"{v.min():.3f} / {np.percentile(v, 5):.3f} / {np.median(v):.3f}"


def gap_table(rows: list[dict], tau: float) -> str:
    """Gap / H_init gap per labelled set, and one row per unlabelled molecule (markdown)."""
    lines = ["Gap / H_init gap (min / 5th percentile / median):", "",
             "| set | molecules | label | prediction, tau = 0 | prediction, stored tau | "
             "guard raised tau |", "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["set"] for r in rows if r["ratio_label"] is not None):
        sel = [r for r in rows if r["set"] == name]
        lines.append(f"| {name} | {len(sel)} | {_stats([r['ratio_label'] for r in sel])} | "
                     f"{_stats([r['ratio_pred_tau0'] for r in sel])} | "
                     f"{_stats([r['ratio_pred'] for r in sel])} | "
                     f"{sum(r['guard_tau'] != tau for r in sel)} |")
    unlabelled = [r for r in rows if r["ratio_label"] is None]
    if unlabelled:
        lines += ["", "Molecules without labels:", "",
                  "| molecule | atoms | H_init gap (mHa) | gap / H_init gap, tau = 0 | "
                  "gap / H_init gap, stored tau | tau after the guard |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['molecule']} | {r['natm']} | {r['gap_hinit_mha']:.1f} | "
                  f"{r['ratio_pred_tau0']:.3f} | {r['ratio_pred']:.3f} | {r['guard_tau']:g} |"
                  for r in unlabelled]
    return "\n".join(lines)
