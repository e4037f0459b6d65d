"""SCF cycles along a short MD trajectory: qhflow guess vs minao vs the previous step's density.

Molecular-dynamics codes usually restart each step's SCF from the previous
step's converged density.  This runs velocity-Verlet MD with the ASE
calculator in 'scf' mode, then for every frame runs three fresh SCFs.

    python benchmarks/bench_md_guess.py examples/ethanol.xyz --steps 10 --model default
"""
from __future__ import annotations

import argparse
import statistics
import sys

from ase import units
from ase.io import read
try:  # ASE >= 3.29 deprecates MaxwellBoltzmannDistribution for this (same distribution)
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta
from ase.md.verlet import VelocityVerlet
from pyscf import gto

from pyscf_qhflow.ase import QHFlowCalculator
from pyscf_qhflow.checkpoint import load_model
from pyscf_qhflow.scfrun import make_scf, run_scf


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("xyz")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--dt-fs", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=500.0, help="initial K")
    p.add_argument("--model", default="default")
    p.add_argument("--xc", default="b3lyp")
    p.add_argument("--grid-level", type=int, default=3)
    args = p.parse_args(argv)
    model = load_model(args.model)
    atoms = read(args.xyz)
    atoms.calc = QHFlowCalculator(xc=args.xc, mode="scf", model=model,
                                  grid_level=args.grid_level)
    thermalize_momenta(atoms, temperature_K=args.temperature, rng=_rng())
    frames = [atoms.positions.copy()]
    md = VelocityVerlet(atoms, timestep=args.dt_fs * units.fs)
    for _ in range(args.steps):
        md.run(1)
        frames.append(atoms.positions.copy())

    cycles = {"minao": [], "qhflow": [], "previous": []}
    dm_prev = None
    print("| step | minao | qhflow | previous density |\n|---|---|---|---|")
    for step, pos in enumerate(frames):
        mol = gto.M(atom=list(zip(atoms.get_chemical_symbols(), pos.tolist())),
                    basis="def2-svp", unit="Angstrom", verbose=0)
        row = {}
        for guess in ("minao", "qhflow"):
            mf = make_scf(mol, args.xc, args.grid_level)
            mf.qhflow_model = model
            row[guess] = run_scf(mf, guess)
            if guess == "minao":
                dm_next = mf.make_rdm1()
        if dm_prev is not None:
            row["previous"] = run_scf(make_scf(mol, args.xc, args.grid_level), dm_prev)
        dm_prev = dm_next
        for k, r in row.items():
            cycles[k].append(r["cycles"])
        prev = row["previous"]["cycles"] if "previous" in row else "-"
        print(f"| {step} | {row['minao']['cycles']} | {row['qhflow']['cycles']} | {prev} |")
    print("\n| guess | mean cycles (steps 1..N) |\n|---|---|")
    for k, v in cycles.items():
        vals = v[1:] if k != "previous" else v
        print(f"| {k} | {statistics.mean(vals):.2f} |")
    return 0


def _rng():
    import numpy as np
    return np.random.default_rng(0)


if __name__ == "__main__":
    sys.exit(main())
