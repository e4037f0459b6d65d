"""``qhflow scf``: SCF from the qhflow guess, compared with PySCF's guesses.

One molecule prints a table of its guesses.  Many molecules (several .xyz
files, a directory of them, or a SMILES file) is the screening workflow:
``--jobs`` worker processes with one model each, a progress bar, every
molecule's rows appended to a resumable CSV (``--csv``; an interrupted run
goes on where it stopped) and a summary table at the end.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from tqdm.auto import tqdm

from ..scfrun import PYSCF_GUESSES, build_molecule, load_molecule, xyz_files_in

ENERGY_TOL = 1e-8  # Hartree: every guess must reach the same SCF solution


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help=".xyz geometry files (Angstrom), directories of them, or "
                             "SMILES files (one 'SMILES [name]' a line; RDKit embeds them)")
    parser.add_argument("--compare", nargs="*", default=["minao"],
                        choices=list(PYSCF_GUESSES), metavar="GUESS",
                        help=f"PySCF guesses to compare with: {' '.join(PYSCF_GUESSES)} "
                             "(default: minao; none: qhflow only)")
    parser.add_argument("--xc", default="b3lyp", help="functional, or 'hf' (default b3lyp)")
    parser.add_argument("--basis", default="def2-svp")
    parser.add_argument("--charge", type=int, default=0)
    parser.add_argument("--spin", type=int, default=None, help="2S (default: 0 or 1)")
    parser.add_argument("--grid-level", type=int, default=3)
    parser.add_argument("--conv-tol", type=float, default=1e-10)
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes (one model each; threads = cores / jobs)")
    parser.add_argument("--csv", default=None,
                        help="append each molecule's rows here and skip what it holds "
                             "(resumable; default for several molecules: qhflow_scf.csv)")
    parser.add_argument("--no-confidence", action="store_true",
                        help="skip the guess's prior samples (its confidence and "
                             "low-confidence fallback): the fastest guess")
    parser.add_argument("--model", default="default",
                        help="'default' (shipped weights) or a checkpoint path")
    parser.add_argument("--verbose", type=int, default=0, help="PySCF verbosity")


def read_inputs(inputs, basis: str, charge: int = 0, spin: int | None = None,
                verbose: int = 0) -> list[tuple[str, object]]:
    """``(name, Mole)`` for each .xyz file, .xyz in a directory (sorted) or SMILES line.

    Names must be unique: they key the resumable CSV.
    """
    from ..data.label import molecules_from_smiles
    mols, seen = [], {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            batch = [(p.stem, load_molecule(p, basis, charge, spin, verbose))
                     for p in xyz_files_in(path)]
        elif not path.is_file():
            raise FileNotFoundError(f"no such .xyz file, directory or SMILES file: {path}")
        elif path.suffix.lower() == ".xyz":
            batch = [(path.stem, load_molecule(path, basis, charge, spin, verbose))]
        else:
            from ..data.smiles import smiles_to_geometry
            batch = []
            for spec in molecules_from_smiles(path):
                z, pos = smiles_to_geometry(spec.smiles)  # PySCF takes atomic numbers
                batch.append((spec.name, build_molecule([int(q) for q in z], pos,
                                                        basis, charge, spin, verbose)))
        for name, mol in batch:
            if name in seen:
                raise ValueError(f"molecule name {name!r} comes from both {seen[name]} and "
                                 f"{item}: names key the results")
            seen[name] = item
            mols.append((name, mol))
    return mols


def _disagree(rows: list[dict]) -> bool:
    """Some guess failed, or the guesses reached different energies."""
    energies = [float(r["e_tot"]) for r in rows if str(r["converged"]) == "True"]
    return len(energies) < len(rows) or max(energies) - min(energies) > ENERGY_TOL


def _print_molecule(rows: list[dict], write=print) -> None:
    write(f"{'guess':<8} {'cycles':>6} {'Fock builds':>11} {'wall s':>8} "
          f"{'E (Hartree)':>20}  note")
    for row in rows:
        note = "" if str(row["converged"]) == "True" else "NOT CONVERGED"
        if row["guess"] == "qhflow":
            note = (f"guess {float(row['guess_s']):.2f} s (H_init + network), "
                    f"{row['guess_fock_builds']} of the builds"
                    if str(row["qhflow_used"]) == "True"
                    else "model not used, fell back to minao (see warning)")
        write(f"{row['guess']:<8} {row['cycles']:>6} {row['fock_builds']:>11} "
              f"{float(row['wall_s']):>8.2f} {float(row['e_tot']):>20.10f}  {note}")
    if _disagree(rows):
        write(f"WARNING: guesses disagree by more than {ENERGY_TOL:g} Ha or failed")


def run(args: argparse.Namespace) -> int:
    from .. import config
    with config.temporarily(guess_confidence=not args.no_confidence):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import tempfile

    from ..benchmark import bench_scf, summarize_scf, summarize_scf_cost
    from ..scfrun import load_predictor
    try:
        mols = read_inputs(args.inputs, args.basis, args.charge, args.spin, args.verbose)
    except (FileNotFoundError, ValueError, ImportError) as err:
        print(f"qhflow scf: {err}")
        return 2
    try:
        model, setup = load_predictor(args.model)
    except FileNotFoundError as err:
        print(f"qhflow scf: {err}")
        return 2
    guesses = ["qhflow", *args.compare]
    single = len(mols) == 1
    print(f"{len(mols)} molecule(s), {args.xc}/{args.basis}, model "
          f"{getattr(model, 'name', args.model)}; imports {setup['import_s']:.1f} s and model "
          f"load {setup['model_load_s']:.1f} s once per process, in no wall time below")

    def report(rows: list[dict], write=tqdm.write) -> None:
        write(f"\n{rows[0]['molecule']}: {rows[0]['natm']} atoms, {rows[0]['nao']} AOs")
        _print_molecule(sorted((r for r in rows if r["guess"] in guesses),
                               key=lambda r: guesses.index(r["guess"])), write)

    with tempfile.TemporaryDirectory() as tmp:
        csv_path = args.csv or (Path(tmp) / "scf.csv" if single else "qhflow_scf.csv")
        rows = bench_scf(mols, csv_path, guesses=guesses, model=model, jobs=args.jobs,
                         progress=not single, include_converged=False,
                         with_minao="minao" in guesses,
                         on_molecule=None if single else report,
                         xc=args.xc, grid_level=args.grid_level, conv_tol=args.conv_tol)
    names = {name for name, _ in mols}
    rows = [r for r in rows if r["molecule"] in names and r["guess"] in guesses]
    by_mol: dict[str, list[dict]] = {}
    for r in rows:
        by_mol.setdefault(r["molecule"], []).append(r)
    bad = sorted(m for m, mol_rows in by_mol.items() if _disagree(mol_rows))
    if single:  # also when --csv held it already
        report(rows, print)
    else:
        print(f"\n{len(by_mol)} molecules; results in {csv_path}\n")
        print(summarize_scf(rows))
        if "minao" in guesses:
            print("\n" + summarize_scf_cost(rows))
        if bad:
            print(f"\nWARNING: {len(bad)} molecule(s) with a failed guess or guesses that "
                  f"disagree by more than {ENERGY_TOL:g} Ha: {', '.join(bad[:10])}")
    return 1 if bad else 0
