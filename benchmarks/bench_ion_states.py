"""Which UKS state do the qhflow and MinAO guesses reach for charged molecules?

For doublet cations (and anions) of held-out test molecules, B3LYP/def2-SVP
UKS is converged from each guess; then PySCF's internal stability analysis
(``mf.stability()``) checks each solution, and an unstable one is followed
downhill (restart from the rotated orbitals, at most ``--max-follow`` times)
until it is stable.  The table says where each guess landed, whether that
was a stable minimum, and where the followed solutions end, so an energy
difference between guesses can be read as "one guess found a saddle point"
or "two different minima".

    python benchmarks/bench_ion_states.py --shards ../shared/data --limit 2 --charge 1 \\
        --out benchmarks/out/ion_states

Rows go to OUT/ion_states_q{charge}.csv (resumable); a markdown table is printed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pyscf import gto

from pyscf_qhflow.benchmark import csv_appender, read_rows
from pyscf_qhflow.data.dataset import ShardDataset
from pyscf_qhflow.data.shardfile import find_shards
from pyscf_qhflow.data.splits import split_indices
from pyscf_qhflow.scfrun import make_scf, run_scf

FIELDS = ["molecule", "natm", "charge", "guess", "cycles", "e_scf", "stable", "follow_steps",
          "e_stable", "wall_s"]


def _mol(rec, charge: int, basis: str) -> gto.Mole:
    Z = [int(z) for z in rec["Z"]]
    return gto.M(atom=list(zip(Z, rec["pos"])), basis=basis, unit="Angstrom", charge=charge,
                 spin=(sum(Z) - charge) % 2, verbose=0)


def converge_and_check(mol, guess: str, xc: str, max_follow: int) -> dict:
    """UKS from ``guess``; stability analysis; follow instabilities to a stable state."""
    t0 = time.perf_counter()
    mf = make_scf(mol, xc=xc)
    res = run_scf(mf, guess)
    if guess == "qhflow" and not res["qhflow_used"]:
        raise RuntimeError(f"{mol}: the qhflow guess fell back to MinAO")
    mo_new, _, stable, _ = mf.stability(internal=True, external=False, return_status=True)
    first_stable, steps, e = bool(stable), 0, float(mf.e_tot)
    while not stable and steps < max_follow:
        steps += 1
        dm = mf.make_rdm1(mo_new, mf.mo_occ)
        mf.kernel(dm0=dm)
        e = float(mf.e_tot)
        mo_new, _, stable, _ = mf.stability(internal=True, external=False, return_status=True)
    return {"cycles": res["cycles"], "e_scf": res["e_tot"], "stable": first_stable,
            "follow_steps": steps if stable else f">{steps}", "e_stable": e,
            "wall_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", required=True, nargs="+")
    p.add_argument("--limit", type=int, default=2)
    p.add_argument("--charge", type=int, default=1)
    p.add_argument("--xc", default="b3lyp")
    p.add_argument("--basis", default="def2-svp")
    p.add_argument("--max-follow", type=int, default=3)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    ds = ShardDataset(find_shards(args.shards))
    test = split_indices(ds, "test", args.limit)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / f"ion_states_q{args.charge}.csv"
    done = {(r["molecule"], r["guess"]) for r in read_rows(csv_path)}
    with csv_appender(csv_path, FIELDS) as (f, writer):
        for i in test:
            rec = ds[int(i)]
            name = f"qm9_{int(rec['qm9_index'])}"
            mol = _mol(rec, args.charge, args.basis)
            for guess in ("minao", "qhflow"):
                if (name, guess) in done:
                    continue
                row = converge_and_check(mol, guess, args.xc, args.max_follow)
                writer.writerow({"molecule": name, "natm": mol.natm, "charge": args.charge,
                                 "guess": guess, **row})
                f.flush()
                print(f"{name} {guess}: {row}", file=sys.stderr)

    rows = read_rows(csv_path)
    print("| molecule | guess | cycles | E(SCF) - E(lowest), mHa | stable | follow steps "
          "| E(after following) - E(lowest), mHa |")
    print("|---|---|---|---|---|---|---|")
    for name in dict.fromkeys(r["molecule"] for r in rows):
        mine = [r for r in rows if r["molecule"] == name]
        lowest = min(min(float(r["e_scf"]), float(r["e_stable"])) for r in mine)
        for r in mine:
            print(f"| {name} | {r['guess']} | {r['cycles']} | "
                  f"{(float(r['e_scf']) - lowest) * 1e3:.3f} | {r['stable']} | "
                  f"{r['follow_steps']} | {(float(r['e_stable']) - lowest) * 1e3:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
