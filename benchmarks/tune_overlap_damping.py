"""Choose the overlap damping tau of a model on labelled molecules (validation split).

For each molecule the model predicts once without damping (R = F - H_init);
every tau of the grid then gives F_tau = H_init + W R W,
W = S (S + tau)^-1 (:mod:`pyscf_qhflow.overlap_damping`), scored with
:func:`pyscf_qhflow.benchmark.fock_metrics` against the label.  The chosen tau
is the one with the lowest mean error of the starting density (what an SCF
guess hands over).  ``--write CKPT`` stores it in the checkpoint's config
(:func:`pyscf_qhflow.checkpoint.update_checkpoint`; the weights stay
byte-identical).

    python benchmarks/tune_overlap_damping.py --shards ../shared/data labels/test_extra \
        --split val --model weights/default.pt --out benchmarks/out/damping_val
"""
from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import numpy as np
from pyscf import gto
from tqdm import tqdm

from pyscf_qhflow.benchmark import fock_metrics
from pyscf_qhflow.checkpoint import load_model, update_checkpoint
from pyscf_qhflow.data.shards import ShardDataset, find_shards, split_indices
from pyscf_qhflow.guess.overlap_damping import damp_residual

TAUS = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
COLUMNS = ("h_mae_uha", "occ_eps_mae_mha", "gap_err_mha", "occ_cosine", "density_err")


def score(ds, indices, model, taus) -> list[dict]:
    """One row per (molecule, tau) plus the H_init baseline (tau = 'hinit')."""
    model.set_overlap_damping(0.0)
    model.set_min_gap_ratio(0.0)  # the raw residual: the gap guard would damp it
    rows = []
    for i in tqdm(indices, desc="molecules"):
        rec = ds[i]
        mol = gto.M(atom=[(int(z), r) for z, r in zip(rec["Z"], rec["pos"])],
                    basis=model.basis, unit="Angstrom", verbose=0)
        overlap, nocc = mol.intor("int1e_ovlp"), mol.nelectron // 2
        hinit = rec["hinit"]
        residual = model.predict_fock(mol, hinit=hinit) - hinit
        name = f"qm9_{int(rec['qm9_index'])}"
        for tau in taus:
            fock = hinit + damp_residual(residual, overlap, tau)
            rows.append({"molecule": name, "tau": tau,
                         **fock_metrics(fock, rec["fock"], overlap, nocc)})
        rows.append({"molecule": name, "tau": "hinit",
                     **fock_metrics(hinit, rec["fock"], overlap, nocc)})
    return rows


def _tau_label(tau) -> str:
    return "H_init alone" if tau == "hinit" else f"{tau:g}"


def table(rows: list[dict], key: str = "tau", header: str = "tau", label=_tau_label) -> str:
    """Mean metrics per value of ``rows[i][key]`` (a markdown table; ``label`` names the value)."""
    lines = [f"| {header} | molecules | H MAE (µHa) | occ. ε MAE (mHa) | gap err (mHa) | "
             "occ. cosine | density err (mean) | (median) | (max) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for value in dict.fromkeys(r[key] for r in rows):
        sel = [r for r in rows if r[key] == value]
        m = {k: statistics.mean(r[k] for r in sel) for k in COLUMNS}
        dens = [r["density_err"] for r in sel]
        lines.append(f"| {label(value)} | {len(sel)} | {m['h_mae_uha']:.1f} | "
                     f"{m['occ_eps_mae_mha']:.2f} | {m['gap_err_mha']:.2f} | "
                     f"{m['occ_cosine']:.3f} | {m['density_err']:.4f} | "
                     f"{statistics.median(dens):.4f} | {max(dens):.3f} |")
    return "\n".join(lines)


def choose(rows: list[dict]) -> float:
    taus = [t for t in dict.fromkeys(r["tau"] for r in rows) if t != "hinit"]
    return min(taus, key=lambda t: statistics.mean(r["density_err"] for r in rows
                                                    if r["tau"] == t))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", nargs="+", required=True)
    ap.add_argument("--split", default="val", choices=["train", "val", "test"])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--model", default="default")
    ap.add_argument("--taus", type=float, nargs="+", default=list(TAUS))
    ap.add_argument("--out", required=True, help="output directory (CSV and table)")
    ap.add_argument("--write", default=None, metavar="CKPT",
                    help="store the chosen tau in this checkpoint file")
    args = ap.parse_args(argv)

    ds = ShardDataset(find_shards(args.shards), with_hinit=True)
    indices = split_indices(ds, args.split, args.limit)
    model = load_model(args.model, device="cpu")
    t0 = time.perf_counter()
    rows = score(ds, indices, model, args.taus)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "damping.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["molecule", "tau", *COLUMNS, "homo_err_mha",
                                               "lumo_err_mha"])
        writer.writeheader()
        writer.writerows(rows)
    best = choose(rows)
    text = (f"{args.split} split, {len(indices)} molecules, model {args.model} "
            f"({time.perf_counter() - t0:.0f} s)\n\n{table(rows)}\n\n"
            f"lowest mean density error: tau = {best:g}\n")
    (out / "damping.md").write_text(text)
    print(text)
    if args.write:
        update_checkpoint(args.write, config={"overlap_damping": best},
                          card={"overlap_damping": {
                              "tau": best, "chosen_on": f"{args.split} split, "
                              f"{len(indices)} molecules", "criterion":
                              "lowest mean density error of the aufbau guess density",
                              "script": "benchmarks/tune_overlap_damping.py"}})
        print(f"wrote overlap_damping = {best:g} into {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
