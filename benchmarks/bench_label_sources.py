"""Where training targets could come from: each source's error and its cost per molecule.

Issue #26 item 3 compares three sources of Fock-matrix targets for new
molecules: (a) fast labels (the SCF converged from the model's guess to
1e-8, as in shards 006 on), (b) pseudo-labels F[D_k] after k = 1-4 SCF
cycles from the model's guess, and (c) the label-free self-consistency
target F[D(F_pred)] (one Fock build at the guess density; k = 0 of (b)).
A target helps the model only where it is closer to the converged F* than
the model already is, so for each molecule this script measures, against
the stored label F* of the shard (tight or fast: <= 1 µHa from tight,
RESULTS 15):

* ``F_pred``: the default model's prediction (H_init from the shard);
* ``F[D_k]``, k = 0..K: the Fock matrix built from the k-th SCF density
  from the guess (PySCF's default CDIIS, B3LYP/def2-SVP, grid level 3), its
  MAE against F* (µHa) and the seconds to reach it (integrals, grid, guess
  density and k + 1 Fock builds: what labelling a new molecule that way
  costs, besides H_init, one more build that every source pays alike and
  that comes from the shard here);
* for scale, the seconds of the full fast label (the SCF to conv_tol 1e-8,
  conv_tol_grad 1e-4, as ``qhflow label --guess qhflow``).

One row per molecule and source in OUT/label_sources.csv; prints the means.

    OMP_NUM_THREADS=1 python benchmarks/bench_label_sources.py --shards ../shared/data \
        --split val --limit 20 --out benchmarks/out/label_sources
"""
from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", default="../shared/data")
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--max-k", type=int, default=4, help="SCF cycles of the pseudo-labels")
    p.add_argument("--model", default="default")
    p.add_argument("--out", default="benchmarks/out/label_sources")
    args = p.parse_args()

    import pyscf_qhflow  # noqa: F401
    from pyscf_qhflow.data.dataset import ShardDataset
    from pyscf_qhflow.data.shardfile import build_mol, find_shards
    from pyscf_qhflow.data.splits import split_indices
    from pyscf_qhflow.guess.hook import density_from_fock
    from pyscf_qhflow.scfrun import load_predictor, make_scf, run_scf

    model, _ = load_predictor(args.model)
    ds = ShardDataset(find_shards(args.shards), with_hinit=True, with_overlap=False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fields = ["molecule", "atoms", "nao", "source", "k", "mae_uha", "seconds"]
    rows = []
    with open(out / "label_sources.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for i in split_indices(ds, args.split, args.limit):
            rec = ds[i]
            name = f"qm9_{int(rec['qm9_index'])}"
            mol = build_mol(rec["Z"], rec["pos"], ds.basis)
            label = rec["fock"]

            def mae(f) -> float:
                return float(np.abs(np.asarray(f) - label).mean() * 1e6)

            t0 = time.perf_counter()
            fock_pred = model.predict_fock(mol, hinit=rec["hinit"])
            t_pred = time.perf_counter() - t0  # the network only: H_init comes with the shard
            mine = [{"source": "prediction", "k": "", "mae_uha": mae(fock_pred),
                     "seconds": t_pred}]
            # (b)/(c): F[D_k] along the SCF from the guess; run_scf's trace times each
            # build from the start of the kernel (integrals and grid included)
            mf = make_scf(mol, conv_tol=1e-8)
            mf.conv_tol_grad, mf.max_cycle = 1e-4, args.max_k
            dm0, _ = density_from_fock(mf, mol, fock_pred)
            fock_after = {}
            mf.callback = lambda envs: fock_after.__setitem__(int(envs["cycle"]) + 1,
                                                              np.array(envs["fock"]))
            trace = run_scf(mf, dm0)["trace"]
            fock_after[0] = mf.get_fock(dm=dm0)  # the matrix of cycle 0's build, untimed
            for point in trace:
                mine.append({"source": "F[D_k]", "k": point["cycle"],
                             "mae_uha": mae(fock_after[point["cycle"]]),
                             "seconds": t_pred + point["t_s"]})
            # (a): the fast label, from the same start
            full = make_scf(mol, conv_tol=1e-8)
            full.conv_tol_grad = 1e-4
            done = run_scf(full, density_from_fock(full, mol, fock_pred)[0])
            mine.append({"source": "fast label", "k": done["cycles"],
                         "mae_uha": mae(full.get_fock()), "seconds": t_pred + done["wall_s"]})
            for row in mine:
                row.update(molecule=name, atoms=mol.natm, nao=mol.nao_nr())
                writer.writerow(row)
                rows.append(row)
            fh.flush()
            print(name, "  ".join(f"{r['source']}{r['k']}: {r['mae_uha']:.1f} µHa "
                                  f"{r['seconds']:.1f} s" for r in mine), flush=True)

    def key(r):
        return (r["source"], r["k"] if r["source"] == "F[D_k]" else "")
    print(f"\nmeans over {len({r['molecule'] for r in rows})} molecules:")
    print("| target | MAE vs label (µHa) | seconds per molecule |")
    print("|---|---|---|")
    for k in sorted({key(r) for r in rows}, key=lambda k: (k[0] != "prediction",
                                                           k[0] == "fast label", str(k[1]))):
        sel = [r for r in rows if key(r) == k]
        label = k[0] if k[0] != "F[D_k]" else f"F[D_{k[1]}]"
        print(f"| {label} | {statistics.mean(r['mae_uha'] for r in sel):.1f} | "
              f"{statistics.mean(r['seconds'] for r in sel):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
