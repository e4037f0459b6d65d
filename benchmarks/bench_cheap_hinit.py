"""A cheaper H_init: density-fitted J/K or a coarser XC grid, what it saves and what it costs.

H_init is the Fock matrix of PySCF's MinAO density in the label protocol
(B3LYP/def2-SVP, grid level 3, exact J/K). Beside an SCF it shares the grid
and the in-core integrals, so what it adds is one Fock build; for direct
SCF (large molecules) that build is a full four-centre J/K pass. This script
builds H_init three ways for held-out molecules of the shards:

* ``exact``: the protocol (the grid and the in-core integrals built first, as
  the SCF would, and not timed: only the Fock build is);
* ``df``: J/K density fitted (PySCF's default auxiliary basis), the same grid
  (its 3-centre integrals are timed: the SCF that follows cannot reuse them);
* ``grid1``: exact J/K, XC on a level-1 grid (the grid build timed).

For each: the added seconds, the H_init difference from ``exact`` (MAE,
µHa), and the model's H MAE against the label when that H_init is the
network's input and the base the residual is added to, *without retraining*
(the network saw exact H_init only, so this is the stricter test: a model
trained on the cheap H_init can only do better). The rule of issue #27:
adopt only if the test H MAE is not more than 10% worse.

    OMP_NUM_THREADS=1 python benchmarks/bench_cheap_hinit.py --shards ../shared/data \\
        --limit 10 --out benchmarks/out/cheap_hinit
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from pyscf_qhflow.benchmark import csv_appender, read_rows
from pyscf_qhflow.checkpoint import load_model
from pyscf_qhflow.data.dataset import ShardDataset
from pyscf_qhflow.data.shardfile import build_mol
from pyscf_qhflow.data.splits import split_indices
from pyscf_qhflow.guess.predictor import Predictor
from pyscf_qhflow.hinit import protocol_ks
from pyscf_qhflow.units import HARTREE_TO_UHA

VARIANTS = ("exact", "df", "grid1")
FIELDS = ["molecule", "natm", "nao"] + [f"{k}_{v}" for v in VARIANTS
                                        for k in ("t", "dhinit_uha", "h_mae_uha")]


def build_hinit(mol, variant: str) -> tuple[np.ndarray, float]:
    """(H_init, seconds added beside an SCF that already holds the grid and integrals)."""
    mf = protocol_ks(mol)
    dm = mf.init_guess_by_minao(mol)
    if variant == "df":
        mf.grids.build()
        mf = mf.density_fit()
        t0 = time.perf_counter()
        fock = mf.get_fock(dm=dm)
        return np.asarray(fock), time.perf_counter() - t0
    if variant == "grid1":
        mf._eri = mol.intor("int2e", aosym="s8")  # in core, as the SCF holds it
        t0 = time.perf_counter()
        mf.grids.level = 1
        mf.grids.build()
        fock = mf.get_fock(dm=dm)
        return np.asarray(fock), time.perf_counter() - t0
    mf.grids.build()
    mf._eri = mol.intor("int2e", aosym="s8")
    t0 = time.perf_counter()
    fock = mf.get_fock(dm=dm)
    return np.asarray(fock), time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", nargs="+", required=True)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--model", default="default")
    p.add_argument("--out", default="benchmarks/out/cheap_hinit")
    args = p.parse_args(argv)
    predictor = Predictor(load_model(args.model))
    ds = ShardDataset(args.shards)
    csv_path = Path(args.out) / "cheap_hinit.csv"
    done = {r["molecule"] for r in read_rows(csv_path)}
    with csv_appender(csv_path, FIELDS) as (f, writer):
        for i in split_indices(ds, args.split)[:args.limit]:
            rec = ds[i]
            name = f"qm9_{int(rec['qm9_index'])}"
            if name in done:
                continue
            mol = build_mol(rec["Z"], rec["pos"], ds.basis)
            row = {"molecule": name, "natm": mol.natm, "nao": mol.nao}
            exact = None
            for variant in VARIANTS:
                hinit, seconds = build_hinit(mol, variant)
                hinit = 0.5 * (hinit + hinit.T)
                exact = hinit if variant == "exact" else exact
                fock = predictor.predict(mol, hinit=hinit).fock
                row[f"t_{variant}"] = seconds
                row[f"dhinit_uha_{variant}"] = float(np.abs(hinit - exact).mean() * HARTREE_TO_UHA)
                row[f"h_mae_uha_{variant}"] = float(np.abs(fock - rec["fock"]).mean()
                                                    * HARTREE_TO_UHA)
            writer.writerow(row)
            f.flush()
            print(f"{name}: " + ", ".join(f"{v} {row[f't_{v}']:.2f} s / "
                                          f"{row[f'h_mae_uha_{v}']:.1f} µHa" for v in VARIANTS),
                  flush=True)
    rows = read_rows(csv_path)
    print("\n| H_init | molecules | added time (s) | H_init diff. from exact (µHa) | "
          "model H MAE (µHa) | vs exact |\n|---|---|---|---|---|---|")
    base = statistics.mean(float(r["h_mae_uha_exact"]) for r in rows)
    for v in VARIANTS:
        mae = statistics.mean(float(r[f"h_mae_uha_{v}"]) for r in rows)
        print(f"| {v} | {len(rows)} | {statistics.mean(float(r[f't_{v}']) for r in rows):.2f} | "
              f"{statistics.mean(float(r[f'dhinit_uha_{v}']) for r in rows):.2f} | {mae:.1f} | "
              f"{100 * (mae / base - 1):+.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
