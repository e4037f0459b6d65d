"""``qhflow bench scf|accuracy|summarize``: SCF cycles per guess, Hamiltonian accuracy,
one table from several SCF runs."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..scfrun import PYSCF_GUESSES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", required=True)
    p = sub.add_parser("scf", help="SCF cycles and wall time from every guess")
    _add_sources(p)
    p.add_argument("--guesses", nargs="+", default=["qhflow", *PYSCF_GUESSES],
                   choices=["qhflow", *PYSCF_GUESSES])
    p.add_argument("--xc", default="b3lyp")
    p.add_argument("--basis", default="def2-svp")
    p.add_argument("--grid-level", type=int, default=3)
    p.add_argument("--conv-tol", type=float, default=1e-10)
    p.add_argument("--jobs", type=int, default=1, help="process pool size")
    p.add_argument("--charge", type=int, default=0, help="net charge of every molecule")
    p.add_argument("--spin", type=int, default=None,
                   help="2S of every molecule (default: 0 or 1 by electron count)")
    p.add_argument("--no-limit", action="store_true",
                   help="skip the converged-density restart (the lower-limit row)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--hinit-grid-level", type=int, default=None,
                   help="XC grid level of the guess's H_init (default: pyscf_qhflow.config."
                        "hinit_grid_level, what users get; 3 is the protocol's grid, "
                        "shared with the SCF)")
    p.add_argument("--no-confidence", action="store_true",
                   help="the guess without its prior samples (pyscf_qhflow.config."
                        "guess_confidence = False)")
    _add_num_steps(p)
    a = sub.add_parser("accuracy", help="H MAE, orbital energies, orbital similarity "
                                        "on labelled molecules (and the H_init baseline)")
    _add_sources(a, xyz=False)
    _add_num_steps(a)
    m = sub.add_parser("summarize", help="one SCF table from several runs' scf.csv files "
                                         "(e.g. molecules run in parallel)")
    m.add_argument("csv", nargs="+", help="scf.csv files of 'qhflow bench scf' runs")
    m.add_argument("--molecules", nargs="+", default=None, metavar="NAME",
                   help="only these molecules (names as in the CSV)")
    m.add_argument("--out", default=None, help="also write the table to OUT/scf_summary.md")


def _add_num_steps(parser) -> None:
    parser.add_argument("--num-steps", type=int, default=None,
                        help="flow Euler steps K (default: the model's own)")


def _add_sources(parser, xyz: bool = True) -> None:
    if xyz:
        parser.add_argument("inputs", nargs="*", help=".xyz files or directories of them")
    parser.add_argument("--shards", nargs="+", default=None, metavar="SHARDS",
                        help="directories or globs of labelled HDF5 shards")
    parser.add_argument("--split", default="test", choices=["train", "val", "test", "all"],
                        help="which split of the shards (by QM9 index; default test)")
    parser.add_argument("--limit", type=int, default=None, help="first N molecules only")
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", required=True, help="output directory (resumable)")


def _xyz_molecules(inputs, basis, charge: int = 0, spin: int | None = None):
    from ..scfrun import load_molecule
    paths = []
    for item in inputs:
        p = Path(item)
        paths.extend(sorted(p.glob("*.xyz")) if p.is_dir() else [p])
    return [(p.stem, load_molecule(p, basis, charge=charge, spin=spin)) for p in paths]


def _shard_records(args, with_hinit: bool = False):
    from ..data.dataset import ShardDataset
    from ..data.shardfile import find_shards
    from ..data.splits import split_indices
    ds = ShardDataset(find_shards(args.shards), with_hinit=with_hinit)
    return ds, split_indices(ds, args.split, args.limit)


def _shard_molecules(args, basis, charge: int = 0, spin: int | None = None):
    from pyscf import gto
    ds, idx = _shard_records(args)
    mols = []
    for i in idx:
        rec = ds[i]
        nelec = int(np.sum(rec["Z"])) - charge
        mol = gto.M(atom=[(int(z), r) for z, r in zip(rec["Z"], rec["pos"])], basis=basis,
                    unit="Angstrom", charge=charge,
                    spin=nelec % 2 if spin is None else spin, verbose=0)
        mols.append((f"qm9_{int(rec['qm9_index'])}", mol))
    return mols


def run(args: argparse.Namespace) -> int:
    from ..scfrun import load_predictor
    if args.bench == "summarize":
        return _run_summarize(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        model, setup = load_predictor(args.model, num_steps=args.num_steps)
    except FileNotFoundError as err:
        print(f"qhflow bench: {err}")
        return 2
    # the one-off cost of this process, in no row's wall_s
    print(f"qhflow bench: imports {setup['import_s']:.2f} s (torch already imported: "
          f"{setup['torch_was_imported']}), model load {setup['model_load_s']:.2f} s")
    (out / "setup.json").write_text(json.dumps(setup) + "\n")
    if args.bench == "scf":
        return _run_scf(args, model, out)
    return _run_accuracy(args, model, out)


def _run_scf(args, model, out: Path) -> int:
    from .. import config
    # no --hinit-grid-level: the package's default, so the table is what users get
    grid = {} if args.hinit_grid_level is None else {"hinit_grid_level": args.hinit_grid_level}
    with config.temporarily(guess_confidence=not args.no_confidence, **grid):
        return _bench_scf(args, model, out)


def _bench_scf(args, model, out: Path) -> int:
    from ..benchmark import bench_scf, plot_scf, summarize_scf, summarize_scf_cost
    mols = _xyz_molecules(args.inputs, args.basis, args.charge, args.spin)
    if args.shards:
        mols += _shard_molecules(args, args.basis, args.charge, args.spin)
    if not mols:
        print("qhflow bench scf: no molecules given (xyz inputs or --shards)")
        return 2
    rows = bench_scf(mols, out / "scf.csv", guesses=args.guesses, model=model,
                     jobs=args.jobs, xc=args.xc, grid_level=args.grid_level,
                     conv_tol=args.conv_tol, include_converged=not args.no_limit)
    table = summarize_scf(rows) + "\n\n" + summarize_scf_cost(rows)
    (out / "scf_summary.md").write_text(table + "\n")
    print(table)
    if not args.no_plots:
        for p in plot_scf(rows, out):
            print(f"plot: {p}")
    return 0


def _run_accuracy(args, model, out: Path) -> int:
    from ..benchmark import bench_accuracy, summarize_accuracy
    if not args.shards:
        print("qhflow bench accuracy: --shards is required (labelled molecules)")
        return 2
    ds, idx = _shard_records(args, with_hinit=True)  # H_init from the cache when filled
    rows = bench_accuracy(ds, idx, model, out / "accuracy.csv")  # K set in run()
    table = summarize_accuracy(rows)
    (out / "accuracy_summary.md").write_text(table + "\n")
    (out / "accuracy_summary.json").write_text(json.dumps({"n": len(rows)}))
    print(table)
    return 0


def _run_summarize(args) -> int:
    import csv

    from ..benchmark import summarize_scf, summarize_scf_cost
    rows, seen = [], set()
    for path in args.csv:
        with open(path) as f:
            for row in csv.DictReader(f):
                if args.molecules is not None and row["molecule"] not in args.molecules:
                    continue
                key = (row["molecule"], row["guess"])
                if key in seen:
                    print(f"qhflow bench summarize: {key[0]} from {key[1]} appears twice "
                          f"(again in {path}); give each run once")
                    return 2
                seen.add(key)
                rows.append(row)
    table = summarize_scf(rows) + "\n\n" + summarize_scf_cost(rows)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "scf_summary.md").write_text(table + "\n")
    print(table)
    return 0
