"""``qhflow`` entry point.  Each subcommand is a module of this package with
``add_arguments(parser)`` and ``run(args) -> int``; this file only dispatches."""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "scf": "run SCF from the qhflow guess on .xyz files, directories or SMILES files and compare with PySCF's guesses",
    "oneshot": "energy and forces at the predicted density (no SCF), with the Harris bracket",
    "label": "label molecules with PySCF (Fock matrices in the shared HDF5 format)",
    "train": "train a QHFlow model on labelled shards",
    "learn": "label a stream of molecules (QM9, .xyz, SMILES) and train on them as they "
             "arrive; resumable",
    "bench": "benchmarks: SCF cycles per guess, Hamiltonian accuracy",
    "tune": "choose the inference options of a set of weights on labelled molecules",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qhflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in SUBCOMMANDS.items():
        module = importlib.import_module(f"pyscf_qhflow.cli.{name}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
