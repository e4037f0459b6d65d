"""The SCF's first step from the qhflow guess: plain Roothaan against a damped step.

Why: from the qhflow guess density D0 = D(F_pred), PySCF's first cycle
diagonalises F[D0] with no DIIS (it has one vector).  On QM9 that step
raises the energy error about tenfold (RESULTS 18): the Hartree-XC response
amplifies the guess's density error and flips its sign (charge sloshing).
With F_pred in hand, the first step can instead diagonalise
``F_pred + beta (F[D0] - F_pred)``: a linear mode that the plain step
multiplies by lambda (< -1 for sloshing) is multiplied by
``1 - beta + beta lambda`` (zero at beta = 1 / (1 - lambda)).

Variants (one model prediction per molecule, shared by all):
``beta`` in --betas (1 = PySCF's plain step), each with PySCF's default
``diis_start_cycle = 1`` and, with ``--diis0``, also with the first
build's (F[D0], D0) in DIIS (``diis_start_cycle = 0``); MinAO for scale.

Usage::

    python benchmarks/bench_first_step.py --shards ../shared/data --limit 10 \
        --out benchmarks/out/first_step
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np


def _molecules(shards: str, limit: int):
    from pyscf import gto

    from pyscf_qhflow.data.dataset import ShardDataset
    from pyscf_qhflow.data.shardfile import find_shards
    from pyscf_qhflow.data.splits import split_indices
    ds = ShardDataset(find_shards(shards), with_hinit=False)
    for i in split_indices(ds, "test", limit):
        rec = ds[i]
        mol = gto.M(atom=[(int(z), r) for z, r in zip(rec["Z"], rec["pos"])],
                    basis="def2-svp", unit="Angstrom", verbose=0)
        yield f"qm9_{int(rec['qm9_index'])}", mol


def mix_first_fock(fock_scf: np.ndarray, fock_pred: np.ndarray, beta: float) -> np.ndarray:
    """``F_pred + beta (F_scf - F_pred)``, Hartree (beta = 1: PySCF's plain step)."""
    return fock_pred + beta * (np.asarray(fock_scf) - fock_pred)


def damp_first_step(mf, fock_pred: np.ndarray, beta: float) -> None:
    """Make ``mf``'s kernel diagonalise :func:`mix_first_fock` in its first cycle only.

    A thin subclass (an instance attribute would trip PySCF's sanity check):
    ``get_fock`` called with ``cycle=0`` (the kernel's first cycle; every other
    call passes another cycle or none) returns the mixed matrix.
    """
    if beta == 1.0:
        return
    base = type(mf)

    def get_fock(self, h1e=None, s1e=None, vhf=None, dm=None, cycle=-1, diis=None,
                 *args, **kwargs):
        fock = base.get_fock(self, h1e, s1e, vhf, dm, cycle, diis, *args, **kwargs)
        return mix_first_fock(fock, fock_pred, beta) if cycle == 0 else fock

    mf.__class__ = type(base.__name__, (base,), {"get_fock": get_fock})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", default="../shared/data")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--betas", default="1,0.5,0.35,0.25")
    p.add_argument("--diis0", action="store_true")
    p.add_argument("--no-minao", action="store_true", help="skip the MinAO reference runs")
    p.add_argument("--conv-tol", type=float, default=1e-9)
    p.add_argument("--out", default="benchmarks/out/first_step")
    args = p.parse_args()

    import pyscf_qhflow  # noqa: F401
    from pyscf_qhflow.guess.hook import density_from_fock, predict_fock
    from pyscf_qhflow.scfrun import load_predictor, make_scf, run_scf

    model, _ = load_predictor("default")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    betas = [float(b) for b in args.betas.split(",")]
    variants = [(b, 1) for b in betas] + ([(b, 0) for b in betas] if args.diis0 else [])
    csv_path = out / "first_step.csv"
    fields = ["molecule", "variant", "cycles", "e_tot", "converged", "trace"]
    rows = []
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for name, mol in _molecules(args.shards, args.limit):
            runs = []
            if not args.no_minao:
                runs.append(("minao", run_scf(make_scf(mol, conv_tol=args.conv_tol), "minao")))
            fock = predict_fock(mol, model)
            for beta, diis_start in variants:
                mf = make_scf(mol, conv_tol=args.conv_tol)
                mf.diis_start_cycle = diis_start
                dm0, _ = density_from_fock(mf, mol, fock)
                damp_first_step(mf, fock, beta)
                runs.append((f"beta={beta:g},diis_start={diis_start}", run_scf(mf, dm0)))
            e_conv = runs[-1][1]["e_tot"]
            for variant, r in runs:
                row = {"molecule": name, "variant": variant, "cycles": r["cycles"],
                       "e_tot": r["e_tot"], "converged": r["converged"],
                       "trace": json.dumps(r["trace"])}
                writer.writerow(row)
                rows.append(row)
                errors = " ".join(f"{abs(t['e_tot'] - e_conv) * 1e3:.1e}"
                                  for t in r["trace"][:6])
                print(f"{name} {variant:24s} cycles {r['cycles']:3d}  |E - E_conv| mHa "
                      f"by cycle: {errors}", flush=True)
            fh.flush()
    names = sorted({r["variant"] for r in rows}, key=lambda v: (v != "minao", v))
    print(f"\nmean cycles by variant (ratio to {names[0]}):")
    base = np.mean([int(r["cycles"]) for r in rows if r["variant"] == names[0]])
    for v in names:
        c = np.mean([int(r["cycles"]) for r in rows if r["variant"] == v])
        print(f"  {v:28s} {c:6.2f}  {c / base:6.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
