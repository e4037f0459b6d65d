"""Why a qhflow guess is poor on one molecule: its orbital spectrum and energy.

For an .xyz file, prints for H_init and for the model's prediction at several
overlap-damping values tau (``pyscf_qhflow.guess.overlap_damping``):

* the lowest orbital energies of ``F C = S C e`` (Hartree): a spurious deep
  level, or a level missing from the core, shows here;
* HOMO, LUMO and gap (Hartree): a near-zero gap means aufbau is filling a
  misplaced level (the first qhflow row is the model as shipped, with the
  gap guard of ``pyscf_qhflow.guess.gap_guard``; the others are without it);
* with ``--energy``, the B3LYP energy of the aufbau density (Hartree, one
  Fock build each): an idempotent density's energy lies above the SCF
  minimum, and the closer the better.

    python benchmarks/guess_diagnostics.py benchmarks/molecules/druglike/fluoxetine.xyz \\
        --taus 0 0.01 0.03 0.1 --energy
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.linalg

from pyscf_qhflow import Predictor, load_model
from pyscf_qhflow.guess.overlap_damping import damp_residual
from pyscf_qhflow.scfrun import load_molecule, make_scf


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("xyz")
    p.add_argument("--model", default="default")
    p.add_argument("--taus", type=float, nargs="+", default=[0.0, 0.01, 0.03, 0.1])
    p.add_argument("--lowest", type=int, default=8, help="how many lowest levels to print")
    p.add_argument("--energy", action="store_true",
                   help="also the KS energy of each aufbau density (one Fock build each)")
    args = p.parse_args(argv)
    model = load_model(args.model, device="cpu")
    mol = load_molecule(args.xyz)
    mf = make_scf(mol)
    mf.verbose = 0
    overlap = mf.get_ovlp()
    hinit = mf.get_fock(dm=mf.init_guess_by_minao())
    hinit = 0.5 * (hinit + hinit.T)
    nocc = mol.nelectron // 2
    print(f"{args.xyz}: {mol.natm} atoms, {mol.nao} AOs, {nocc} occupied; smallest overlap "
          f"eigenvalues {np.array2string(np.linalg.eigvalsh(overlap)[:3], precision=6)}")
    focks = {"H_init": hinit}
    shipped = Predictor(model).predict(mol, hinit=hinit)  # gap guard included
    focks[f"qhflow as shipped (gap guard: tau {shipped.guard['tau']:g})"] = shipped.fock
    raw = Predictor(model, overlap_damping=0.0, min_gap_ratio=0.0).predict(mol, hinit=hinit)
    for tau in args.taus:  # each row at exactly its tau, on the same raw residual
        focks[f"qhflow tau={tau:g}"] = hinit + damp_residual(raw.residual, overlap, tau)
    print("| Fock | lowest levels (Ha) | HOMO | LUMO | gap | E(aufbau density) (Ha) |")
    print("|---|---|---|---|---|---|")
    for name, fock in focks.items():
        e, c = scipy.linalg.eigh(fock, overlap)
        energy = "-"
        if args.energy:
            t0 = time.perf_counter()
            dm = mf.make_rdm1(c, mf.get_occ(e, c))
            energy = f"{mf.energy_tot(dm):.6f} ({time.perf_counter() - t0:.0f} s)"
        low = " ".join(f"{x:.2f}" for x in e[:args.lowest])
        print(f"| {name} | {low} | {e[nocc - 1]:.4f} | {e[nocc]:.4f} | "
              f"{e[nocc] - e[nocc - 1]:.4f} | {energy} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
