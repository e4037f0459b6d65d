"""Evidence for the gap guard's threshold (``pyscf_qhflow.gap_guard``).

For labelled QM9 molecules (shards), the HOMO-LUMO gap of the converged
Fock matrix (label) and of the model's prediction, each divided by the gap
of H_init (the MinAO-density Fock); the prediction without damping
(tau = 0) and at the model's own tau, before the guard.  For .xyz molecules
(no label), the same ratio for the prediction, and the tau the guard picks.

A threshold is safe when no label ratio lies below it (a real gap that small
would be "repaired" away) and useful when broken predictions do.

    python benchmarks/tune_gap_guard.py --shards ../shared/data labels/test_extra \\
        --splits train val test --limit 60 \\
        --xyz benchmarks/molecules/druglike benchmarks/molecules/large \\
        --out benchmarks/out/gap_guard
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from pyscf import gto
from tqdm import tqdm

from pyscf_qhflow.checkpoint import load_model
from pyscf_qhflow.data.shards import ShardDataset, find_shards, split_indices
from pyscf_qhflow.guess.gap_guard import homo_lumo_gap, neutral_nocc
from pyscf_qhflow.guess.overlap_damping import damp_residual
from pyscf_qhflow.predict import hinit_and_overlap
from pyscf_qhflow.scfrun import load_molecule


def ratios(mol, hinit, overlap, model, label=None) -> dict:
    """Gap / H_init gap of the label and of the prediction (tau = 0 and the model's tau)."""
    tau = model.overlap_damping
    nocc = neutral_nocc(mol)
    ratio_before = model.min_gap_ratio
    model.set_min_gap_ratio(0.0)  # the raw prediction, before the guard
    try:
        model.set_overlap_damping(0.0)
        residual = model.predict_fock(mol, hinit=hinit) - hinit
    finally:
        model.set_overlap_damping(tau)
        model.set_min_gap_ratio(ratio_before)
    gap_hinit = homo_lumo_gap(hinit, overlap, nocc)
    row = {"natm": mol.natm, "gap_hinit_mha": 1e3 * gap_hinit,
           "ratio_pred_tau0": homo_lumo_gap(hinit + residual, overlap, nocc) / gap_hinit,
           "ratio_pred": homo_lumo_gap(hinit + damp_residual(residual, overlap, tau),
                                       overlap, nocc) / gap_hinit,
           "ratio_label": (None if label is None
                           else homo_lumo_gap(label, overlap, nocc) / gap_hinit)}
    model.predict_fock(mol, hinit=hinit)  # with the guard: which tau it settles on
    row["guard_tau"] = model.last_guard[0]["tau"]
    return row


def _stats(values: list[float]) -> str:
    v = np.asarray(values)
    return f"{v.min():.3f} / {np.percentile(v, 5):.3f} / {np.median(v):.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", nargs="+", default=None)
    ap.add_argument("--splits", nargs="+", default=["val", "test"],
                    choices=["train", "val", "test"])
    ap.add_argument("--limit", type=int, default=None, help="first N molecules per split")
    ap.add_argument("--xyz", nargs="*", default=[], help=".xyz files or directories")
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    model = load_model(args.model, device="cpu")
    t0 = time.perf_counter()
    rows = []
    if args.shards:
        ds = ShardDataset(find_shards(args.shards), with_hinit=True)
        for split in args.splits:
            indices = split_indices(ds, split, args.limit)
            for i in tqdm(indices, desc=f"{split} split"):
                rec = ds[i]
                mol = gto.M(atom=[(int(z), r) for z, r in zip(rec["Z"], rec["pos"])],
                            basis=model.basis, unit="Angstrom", verbose=0)
                rows.append({"set": f"QM9 {split}", "molecule": f"qm9_{int(rec['qm9_index'])}",
                             **ratios(mol, rec["hinit"], mol.intor("int1e_ovlp"), model,
                                      rec["fock"])})
    paths = []
    for item in args.xyz:
        p = Path(item)
        paths.extend(sorted(p.glob("*.xyz")) if p.is_dir() else [p])
    for p in tqdm(paths, desc="xyz molecules"):
        mol = load_molecule(p, model.basis)
        hinit, overlap = hinit_and_overlap(mol, model.xc)
        rows.append({"set": p.parent.name, "molecule": p.stem,
                     **ratios(mol, hinit, overlap, model)})

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "gap_guard.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"model {args.model} (tau = {model.overlap_damping:g}, min_gap_ratio = "
             f"{model.min_gap_ratio:g}); {time.perf_counter() - t0:.0f} s", "",
             "Gap / H_init gap on QM9 (min / 5th percentile / median):", "",
             "| set | molecules | label | prediction, tau = 0 | prediction, model tau | "
             "guard raised tau |", "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["set"] for r in rows if r["ratio_label"] is not None):
        sel = [r for r in rows if r["set"] == name]
        lines.append(f"| {name} | {len(sel)} | {_stats([r['ratio_label'] for r in sel])} | "
                     f"{_stats([r['ratio_pred_tau0'] for r in sel])} | "
                     f"{_stats([r['ratio_pred'] for r in sel])} | "
                     f"{sum(r['guard_tau'] != model.overlap_damping for r in sel)} |")
    unlabelled = [r for r in rows if r["ratio_label"] is None]
    if unlabelled:
        lines += ["", "Molecules without labels:", "",
                  "| molecule | atoms | H_init gap (mHa) | gap / H_init gap, tau = 0 | "
                  "gap / H_init gap, model tau | tau after the guard |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['molecule']} | {r['natm']} | {r['gap_hinit_mha']:.1f} | "
                  f"{r['ratio_pred_tau0']:.3f} | {r['ratio_pred']:.3f} | {r['guard_tau']:g} |"
                  for r in unlabelled]
    text = "\n".join(lines) + "\n"
    (out / "gap_guard.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
