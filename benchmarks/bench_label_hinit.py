"""What filling the H_init cache while labelling costs, against a separate pass.

For a few molecules of a shard directory (their stored geometries), one
thread each:

* ``label``: :func:`~pyscf_qhflow.data.label.label_molecule` without H_init,
* ``label+hinit``: the same with ``with_hinit=True`` (one more Fock build on
  the SCF's grids; what ``qhflow label`` now does by default),
* ``minao_fock``: :func:`~pyscf_qhflow.hinit.minao_fock` alone, i.e. what a
  separate :func:`~pyscf_qhflow.data.hinit_cache.precompute_hinit` pass pays per
  molecule (a fresh grid plus one Fock build),

and the largest difference between the two H_init matrices (Hartree).

    OMP_NUM_THREADS=1 python benchmarks/bench_label_hinit.py --shards ../shared/data --n 3
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from pyscf import gto, lib

from pyscf_qhflow.data.label import label_molecule
from pyscf_qhflow.data.dataset import ShardDataset
from pyscf_qhflow.hinit import minao_fock


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", required=True)
    ap.add_argument("--n", type=int, default=3, help="molecules (the first of the shards)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    lib.num_threads(args.threads)
    ds = ShardDataset(args.shards)
    rows = []
    for i in range(args.n):
        Z, pos = ds.geometry(i)
        t0 = time.perf_counter()
        label_molecule((Z, pos))
        t1 = time.perf_counter()
        lab = label_molecule((Z, pos), with_hinit=True)
        t2 = time.perf_counter()
        mol = gto.M(atom=[(int(z), r) for z, r in zip(Z, pos)], basis="def2-svp",
                    unit="Angstrom", verbose=0)
        fresh = minao_fock(mol)
        t3 = time.perf_counter()
        diff = float(np.abs(lab["hinit"] - fresh).max())
        rows.append((len(Z), t1 - t0, t2 - t1, t3 - t2, diff))
        print(f"molecule {i} ({len(Z)} atoms): label {t1 - t0:.1f} s, label+hinit "
              f"{t2 - t1:.1f} s, minao_fock alone {t3 - t2:.1f} s, max |dH_init| {diff:.1e} Ha",
              flush=True)
    a = np.array(rows)
    print("\n| molecules | mean atoms | label (s) | label + H_init (s) | extra (s) "
          "| separate minao_fock (s) | max abs H_init difference (Ha) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {len(a)} | {a[:, 0].mean():.1f} | {a[:, 1].mean():.1f} | {a[:, 2].mean():.1f} "
          f"| {a[:, 2].mean() - a[:, 1].mean():.1f} | {a[:, 3].mean():.1f} | {a[:, 4].max():.1e} |")


if __name__ == "__main__":
    main()
