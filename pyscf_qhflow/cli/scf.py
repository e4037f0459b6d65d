"""``qhflow scf``: SCF from the qhflow guess, compared with PySCF's guesses."""
from __future__ import annotations

import argparse

from ..scfrun import PYSCF_GUESSES, load_molecule, make_scf, run_scf
from .common import add_model_arguments, load_model_or_report

ENERGY_TOL = 1e-8  # Hartree: every guess must reach the same SCF solution


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("xyz", nargs="+", help=".xyz geometry files (Angstrom)")
    parser.add_argument("--compare", nargs="*", default=["minao"],
                        choices=list(PYSCF_GUESSES), metavar="GUESS",
                        help=f"PySCF guesses to compare with: {' '.join(PYSCF_GUESSES)} "
                             "(default: minao)")
    parser.add_argument("--xc", default="b3lyp", help="functional, or 'hf' (default b3lyp)")
    parser.add_argument("--basis", default="def2-svp")
    parser.add_argument("--charge", type=int, default=0)
    parser.add_argument("--spin", type=int, default=None, help="2S (default: 0 or 1)")
    parser.add_argument("--grid-level", type=int, default=3)
    parser.add_argument("--conv-tol", type=float, default=1e-10)
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    model = load_model_or_report(args.model, "scf")
    if model is None:
        return 2
    status = 0
    for path in args.xyz:
        mol = load_molecule(path, args.basis, args.charge, args.spin, args.verbose)
        print(f"\n{path}: {mol.natm} atoms, {mol.nao} AOs, {args.xc}/{args.basis}, "
              f"model {getattr(model, 'name', '?')}")
        print(f"{'guess':<8} {'cycles':>6} {'Fock builds':>11} {'wall s':>8} "
              f"{'E (Hartree)':>20}  note")
        rows = []
        for guess in ["qhflow", *args.compare]:
            mf = make_scf(mol, args.xc, args.grid_level, args.conv_tol)
            if guess == "qhflow":
                mf.qhflow_model = model
            row = run_scf(mf, guess)
            rows.append(row)
            note = "" if row["converged"] else "NOT CONVERGED"
            if guess == "qhflow":
                note = (f"inference {row['inference_s']:.2f} s" if row["qhflow_used"]
                        else "model not used, fell back to minao (see warning)")
            print(f"{guess:<8} {row['cycles']:>6} {row['fock_builds']:>11} "
                  f"{row['wall_s']:>8.2f} {row['e_tot']:>20.10f}  {note}")
        energies = [r["e_tot"] for r in rows if r["converged"]]
        if any(not r["converged"] for r in rows) or (
                max(energies) - min(energies) > ENERGY_TOL):
            print(f"WARNING: guesses disagree by more than {ENERGY_TOL:g} Ha or failed")
            status = 1
    return status
