"""``qhflow tune damping|gap-guard``: choose the inference options of a set of weights.

A release step after training (see :mod:`pyscf_qhflow.tune`)::

    qhflow tune damping --shards ../shared/data --split val --model RUN/best.pt \\
        --out benchmarks/out/damping_val --write RUN/best.pt
    qhflow tune gap-guard --shards ../shared/data --splits val test \\
        --xyz benchmarks/molecules/druglike --model RUN/best.pt --out benchmarks/out/gap_guard
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from .common import load_model_or_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="tune", required=True)
    d = sub.add_parser("damping", help="overlap damping tau: lowest guess-density error")
    d.add_argument("--shards", nargs="+", required=True, help="labelled shards")
    d.add_argument("--split", default="val", choices=["train", "val", "test", "all"])
    d.add_argument("--limit", type=int, default=None, help="first N molecules of the split")
    d.add_argument("--taus", type=float, nargs="+", default=None,
                   help="candidate tau values (default: 0 and 1e-4 .. 1e-1)")
    d.add_argument("--write", default=None, metavar="CKPT",
                   help="store the chosen tau in this checkpoint file (weights unchanged)")
    g = sub.add_parser("gap-guard", help="gap / H_init gap of labels and predictions")
    g.add_argument("--shards", nargs="+", default=None, help="labelled shards")
    g.add_argument("--splits", nargs="+", default=["val", "test"],
                   choices=["train", "val", "test", "all"])
    g.add_argument("--limit", type=int, default=None, help="first N molecules per split")
    g.add_argument("--xyz", nargs="*", default=[], help=".xyz files or directories")
    for p in (d, g):
        p.add_argument("--model", default="default",
                       help="'default' (shipped weights) or a checkpoint path")
        p.add_argument("--out", required=True, help="output directory (CSV and table)")


def _report(out: Path, stem: str, rows: list[dict], text: str) -> None:
    """``OUT/STEM.csv`` (one row per molecule and setting), ``OUT/STEM.md`` and the terminal."""
    with (out / f"{stem}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / f"{stem}.md").write_text(text)
    print(text)


def _shard_dataset(shards: list[str]):
    """Labelled shards as a dataset whose records carry H_init."""
    from ..data.dataset import ShardDataset
    from ..data.shardfile import find_shards
    return ShardDataset(find_shards(shards), with_hinit=True)


def run(args: argparse.Namespace) -> int:
    model = load_model_or_report(args.model, "tune")
    if model is None:
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.tune == "damping":
        return _run_damping(args, model, out, t0)
    return _run_gap_guard(args, model, out, t0)


def _run_damping(args, model, out: Path, t0: float) -> int:
    from ..checkpoint import update_checkpoint
    from ..tune import DAMPING_GRID, choose_damping, damping_rows, damping_table

    from ..data.splits import split_indices
    ds = _shard_dataset(args.shards)
    indices = split_indices(ds, args.split, args.limit)
    rows = damping_rows(ds, indices, model, args.taus or DAMPING_GRID)
    best = choose_damping(rows)
    _report(out, "damping", rows,
            f"{args.split} split, {len(indices)} molecules, model {args.model} "
            f"({time.perf_counter() - t0:.0f} s)\n\n{damping_table(rows)}\n\n"
            f"lowest mean density error: tau = {best:g}\n")
    if args.write:
        update_checkpoint(args.write, config={"overlap_damping": best},
                          card={"overlap_damping": {
                              "tau": best, "chosen_on": f"{args.split} split, "
                              f"{len(indices)} molecules", "criterion":
                              "lowest mean density error of the aufbau guess density",
                              "command": "qhflow tune damping"}})
        print(f"wrote overlap_damping = {best:g} into {args.write}")
    return 0


def _run_gap_guard(args, model, out: Path, t0: float) -> int:
    from .. import keys
    from ..data.shardfile import build_mol
    from ..guess.predictor import Predictor
    from ..scfrun import load_molecule
    from ..tune import gap_rows, gap_table

    molecules = []
    if args.shards:
        from ..data.splits import split_indices
        ds = _shard_dataset(args.shards)
        for split in args.splits:
            for i in split_indices(ds, split, args.limit):
                rec = ds[i]
                mol = build_mol(rec[keys.Z], rec[keys.POS], model.basis)
                molecules.append((f"QM9 {split}", f"qm9_{int(rec['qm9_index'])}", mol,
                                  rec["hinit"], rec["fock"]))
    for item in args.xyz:
        p = Path(item)
        for path in (sorted(p.glob("*.xyz")) if p.is_dir() else [p]):
            molecules.append((path.parent.name, path.stem, load_molecule(path, model.basis),
                              None, None))
    if not molecules:
        print("qhflow tune gap-guard: no molecules given (--shards or --xyz)")
        return 2
    rows = gap_rows(molecules, model)
    stored = Predictor(model)
    _report(out, "gap_guard", rows,
            f"model {args.model} (tau = {stored.overlap_damping:g}, min_gap_ratio = "
            f"{stored.min_gap_ratio:g}); {time.perf_counter() - t0:.0f} s\n\n"
            f"{gap_table(rows, stored.overlap_damping)}\n")
    return 0
