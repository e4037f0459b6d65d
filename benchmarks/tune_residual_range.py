"""Choose the residual range [r_on, r_off] of a model on labelled molecules (validation split).

For each molecule the model predicts once with neither the range switch nor
the overlap damping (R = F - H_init).  Every candidate range then gives
``F = H_init + W (R * switch) W`` (:mod:`pyscf_qhflow.residual_range`, then
the model's own overlap damping tau), scored with
:func:`pyscf_qhflow.benchmark.fock_metrics` against the label.  The chosen
range is the one with the lowest mean error of the starting density, as for
tau.  ``--write CKPT`` stores it in the checkpoint's config (the weights stay
byte-identical).  A table of ``|F* - H_init|`` and the prediction's error by
pair distance shows why the switch exists.

    python benchmarks/tune_residual_range.py --shards ../shared/data --split val \\
        --out benchmarks/out/range_val
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

from pyscf_qhflow.aolayout import ao_atom_indices
from pyscf_qhflow.benchmark import fock_metrics
from pyscf_qhflow.checkpoint import load_model, update_checkpoint
from pyscf_qhflow.data.shards import ShardDataset, find_shards, split_indices
from pyscf_qhflow.overlap_damping import damp_residual
from pyscf_qhflow.residual_range import limit_residual_range
from tune_overlap_damping import COLUMNS, table  # benchmarks/ is on sys.path when run as a script

RANGES = (None, (4.0, 6.0), (5.0, 7.0), (6.0, 8.0), (7.0, 9.0))  # Angstrom
DISTANCE_BINS = (0.0, 0.01, 2.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 15.0)  # Angstrom


def _label(rng) -> str:
    return "off" if rng is None else f"{rng[0]:g}-{rng[1]:g}"


def score(ds, indices, model, ranges, tau: float):
    """Rows per (molecule, range), and per-distance-bin sums of |F* - H_init| and |F - F*|."""
    model.set_overlap_damping(0.0)
    model.set_residual_range(None)
    model.set_min_gap_ratio(0.0)  # the raw residual: the gap guard would damp it
    rows = []
    nbin = len(DISTANCE_BINS) - 1
    sums = {"n": np.zeros(nbin), "target": np.zeros(nbin), "error": np.zeros(nbin)}
    for i in tqdm(indices, desc="molecules"):
        rec = ds[i]
        mol = gto.M(atom=[(int(z), r) for z, r in zip(rec["Z"], rec["pos"])],
                    basis=model.basis, unit="Angstrom", verbose=0)
        overlap, nocc, hinit = mol.intor("int1e_ovlp"), mol.nelectron // 2, rec["hinit"]
        residual = model.predict_fock(mol, hinit=hinit) - hinit
        ao_atom = ao_atom_indices(mol)
        name = f"qm9_{int(rec['qm9_index'])}"
        for rng in ranges:
            r = residual if rng is None else limit_residual_range(
                residual, rec["pos"], ao_atom, *rng)
            fock = hinit + damp_residual(r, overlap, tau)
            rows.append({"molecule": name, "range": _label(rng),
                         **fock_metrics(fock, rec["fock"], overlap, nocc)})
        # by distance, the model as trained (no switch), with its damping
        pos = np.asarray(rec["pos"])
        dist = np.linalg.norm(pos[ao_atom][:, None] - pos[ao_atom][None], axis=-1)
        k = np.digitize(dist, DISTANCE_BINS) - 1
        err = np.abs(hinit + damp_residual(residual, overlap, tau) - rec["fock"])
        target = np.abs(rec["fock"] - hinit)
        for b in range(nbin):
            m = k == b
            sums["n"][b] += m.sum()
            sums["target"][b] += target[m].sum()
            sums["error"][b] += err[m].sum()
    return rows, sums


def distance_table(sums: dict) -> str:
    lines = ["| pair distance (Å) | matrix elements | mean abs(F* - H_init) (µHa) "
             "| mean abs(F_pred - F*) (µHa), no switch |", "|---|---|---|---|"]
    for b in range(len(DISTANCE_BINS) - 1):
        n = sums["n"][b]
        if n:
            lo, hi = DISTANCE_BINS[b], DISTANCE_BINS[b + 1]
            span = "on-site" if hi <= 0.01 else f"{lo:g}-{hi:g}"
            lines.append(f"| {span} | {int(n)} | {sums['target'][b] / n * 1e6:.1f} | "
                         f"{sums['error'][b] / n * 1e6:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", nargs="+", required=True)
    ap.add_argument("--split", default="val", choices=["train", "val", "test"])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", required=True, help="output directory (CSV and tables)")
    ap.add_argument("--write", default=None, metavar="CKPT",
                    help="store the chosen range in this checkpoint file")
    args = ap.parse_args(argv)
    ds = ShardDataset(find_shards(args.shards), with_hinit=True)
    indices = split_indices(ds, args.split, args.limit)
    model = load_model(args.model, device="cpu")
    tau = model.overlap_damping
    t0 = time.perf_counter()
    rows, sums = score(ds, indices, model, RANGES, tau)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "range.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["molecule", "range", *COLUMNS, "homo_err_mha",
                                               "lumo_err_mha"])
        writer.writeheader()
        writer.writerows(rows)
    best = min(RANGES, key=lambda rng: statistics.mean(
        r["density_err"] for r in rows if r["range"] == _label(rng)))
    summary = table(rows, key="range", header="residual range (Å)", label=str)
    text = (f"{args.split} split, {len(indices)} molecules, model {args.model}, overlap "
            f"damping tau = {tau:g} ({time.perf_counter() - t0:.0f} s)\n\n{summary}\n\n"
            f"lowest mean density error: residual range {_label(best)}\n\n"
            f"{distance_table(sums)}\n")
    (out / "range.md").write_text(text)
    print(text)
    if args.write:
        update_checkpoint(args.write, config={"residual_range": None if best is None
                                              else list(best)},
                          card={"residual_range": {
                              "range_angstrom": None if best is None else list(best),
                              "chosen_on": f"{args.split} split, {len(indices)} molecules",
                              "criterion": "lowest mean density error of the aufbau guess "
                                           "density", "script":
                              "benchmarks/tune_residual_range.py"}})
        print(f"wrote residual_range = {_label(best)} into {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
