"""``qhflow oneshot``: energy and forces at the predicted density, no SCF."""
from __future__ import annotations

import argparse

import numpy as np

from ..scfrun import load_molecule, make_scf, run_scf
from ..units import BOHR_TO_ANGSTROM, HARTREE_TO_EV
from ..units import HARTREE_TO_MEV as HARTREE_MEV
from .common import add_model_arguments, load_model_or_report

FORCE_EV_A = HARTREE_TO_EV / BOHR_TO_ANGSTROM  # Hartree/Bohr -> eV/Angstrom


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("xyz", nargs="+", help=".xyz geometry files (Angstrom)")
    parser.add_argument("--xc", default="b3lyp", help="functional, or 'hf' (default b3lyp)")
    parser.add_argument("--basis", default="def2-svp")
    parser.add_argument("--charge", type=int, default=0,
                        help="total charge; the electron count must be even (RKS/RHF)")
    parser.add_argument("--grid-level", type=int, default=3)
    parser.add_argument("--no-forces", action="store_true", help="energies only")
    parser.add_argument("--gradient-jk", choices=("df", "exact"), default="df",
                        help="J/K derivatives of the gradient: density fitted (default, about "
                             "twice as fast, < 1 meV/Angstrom from exact) or exact")
    parser.add_argument("--gradient-grid-level", type=int, default=None,
                        help="XC grid level of the gradient when coarser than --grid-level "
                             "(default 2: <= 0.6 meV/Angstrom from the level-3 grid, a third "
                             "faster; pass the --grid-level to use the SCF's own grid)")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="flow samples from prior draws for the 'samples' error-bar "
                             "signal (default: the calibration's K with --signal samples, "
                             "else none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prior draws")
    parser.add_argument("--signal", choices=("bracket", "gradient", "samples"), default=None,
                        help="error-bar signal (default: the calibrated default, "
                             "pyscf_qhflow.uncertainty)")
    parser.add_argument("--compare-scf", action="store_true",
                        help="also run the SCF (from the qhflow guess) and print the errors")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..oneshot import GRADIENT_GRID_LEVEL, oneshot
    from ..uncertainty import calibration_source

    model = load_model_or_report(args.model, "oneshot")
    if model is None:
        return 2
    for path in args.xyz:
        mol = load_molecule(path, args.basis, args.charge, None, args.verbose)
        if mol.spin != 0:
            print(f"qhflow oneshot: {path} has {mol.nelectron} electrons; one-shot needs a "
                  "closed shell (RKS/RHF)")
            return 2
        res = oneshot(make_scf(mol, args.xc, args.grid_level), forces=not args.no_forces,
                      model=model, gradient_jk=args.gradient_jk,
                      gradient_grid_level=(GRADIENT_GRID_LEVEL if args.gradient_grid_level is None
                                           else args.gradient_grid_level),
                      num_samples=args.num_samples,
                      seed=args.seed, uncertainty_signal=args.signal)
        print(f"\n{path}: {mol.natm} atoms, {mol.nao} AOs, {args.xc}/{args.basis}, "
              f"model {getattr(model, 'name', '?')}")
        width_mev = (res.e_tot - res.e_harris) * HARTREE_MEV
        u = res.uncertainty
        print(f"E Kohn-Sham at the predicted density {res.e_tot:20.10f} Ha "
              f"+/- {u.e_tot:.2e} Ha (68%; 95%: +/- {u.e_tot_95:.2e})")
        print(f"E Harris-Foulkes                     {res.e_harris:20.10f} Ha")
        print(f"midpoint                             {res.e_mid:20.10f} Ha "
              f"+/- {u.e_mid:.2e} Ha (68%; 95%: +/- {u.e_mid_95:.2e})")
        print(f"error bars from the {u.signal} signal (bracket width {width_mev:.1f} meV; "
              f"calibration: {calibration_source(model)})")
        print("timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in res.timings.items()))
        if res.grad is not None:
            print("forces (eV/Angstrom, Kohn-Sham gradient at the predicted orbitals):")
            for symbol, f in zip((mol.atom_symbol(i) for i in range(mol.natm)),
                                 -res.grad * FORCE_EV_A):
                print(f"  {symbol:<2} {f[0]:12.6f} {f[1]:12.6f} {f[2]:12.6f}")
        if args.compare_scf:
            mf = make_scf(mol, args.xc, args.grid_level)
            mf.qhflow_model = model
            row = run_scf(mf, "qhflow")
            if not row["converged"]:
                print("SCF did not converge: no comparison")
                continue
            e_scf = row["e_tot"]
            print(f"SCF ({row['cycles']} cycles)                         {e_scf:20.10f} Ha")
            print(f"errors (meV): Kohn-Sham {(res.e_tot - e_scf) * HARTREE_MEV:+.2f}, "
                  f"Harris {(res.e_harris - e_scf) * HARTREE_MEV:+.2f}, "
                  f"midpoint {(res.e_mid - e_scf) * HARTREE_MEV:+.2f}")
            if res.grad is not None:
                g_scf = mf.nuc_grad_method().kernel()
                print(f"force MAE {np.abs(res.grad - g_scf).mean() * FORCE_EV_A * 1e3:.2f} "
                      "meV/Angstrom")
    return 0
