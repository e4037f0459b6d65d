"""``qhflow label``: label molecules with PySCF into resumable HDF5 shards.

Examples::

    qhflow label examples/ --out labels/                       # .xyz files
    qhflow label --qm9 1:20000 --qm9-sample 500 --out labels/   # needs qm9pack
    qhflow label --qm9 1:20000 --qm9-sample 500 --out labels/ --shard 3/8   # job array
    qhflow label --qm9 1: --qm9-sample 25 --qm9-split test \
        --exclude-shards ../shared/data --out labels_test/        # grow the test split
    qhflow label examples/ --out labels/ --guess qhflow          # fast labels (FORMAT.md)

``--guess minao`` (default) is the tight QH9 protocol (conv_tol 1e-10);
``--guess qhflow`` starts from the model's guess and converges to conv_tol
1e-8 / conv_tol_grad 1e-4, as the shared shards 006 on.  Every shard stores
H_init beside the label.
"""
from __future__ import annotations

import argparse


def _shard_arg(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/N, got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"expected 0 <= i < N in i/N, got {text!r}")
    return i, n


def _range_arg(text: str) -> tuple[int, int | None]:
    try:
        a, b = text.split(":")
        return int(a or 1), (int(b) if b else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP QM9 indices, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", help=".xyz files or directories of them")
    parser.add_argument("--qm9", type=_range_arg, metavar="START:STOP",
                        help="QM9 molecules with index in [START, STOP) via qm9pack "
                             "(multiples of 50 are always skipped)")
    parser.add_argument("--qm9-sample", type=int, default=None, metavar="N",
                        help="a random draw of N molecules from that range (see --seed)")
    parser.add_argument("--qm9-split", choices=["train", "val", "test"], default=None,
                        help="only QM9 molecules that the train/val/test split rule "
                             "(seed 0) puts in this split, e.g. to grow the test set")
    parser.add_argument("--exclude-shards", action="append", default=[], metavar="SHARDS",
                        help="skip QM9 molecules already in these shards "
                             "(directory or glob; repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output directory of shards")
    parser.add_argument("--xc", default="b3lyp")
    parser.add_argument("--basis", default="def2-svp")
    parser.add_argument("--grid-level", type=int, default=3)
    parser.add_argument("--guess", choices=["minao", "qhflow"], default="minao",
                        help="SCF start: minao (tight QH9 protocol) or qhflow (fast labels "
                             "from the model's guess)")
    parser.add_argument("--model", default=None,
                        help="checkpoint for --guess qhflow (default: the shipped weights)")
    parser.add_argument("--conv-tol", type=float, default=None,
                        help="default 1e-10 (minao) or 1e-8 (qhflow)")
    parser.add_argument("--conv-tol-grad", type=float, default=None,
                        help="default PySCF's (minao) or 1e-4 (qhflow)")
    parser.add_argument("--max-cycle", type=int, default=100)
    parser.add_argument("--shard-size", type=int, default=50)
    parser.add_argument("--shard", type=_shard_arg, default=(0, 1), metavar="i/N",
                        help="only shards k with k %% N == i (cluster job arrays)")
    parser.add_argument("--prefix", default=None,
                        help="shard file prefix (default qm9_<xc>_<basis>)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--no-hinit", action="store_true",
                        help="do not store H_init in the shards (by default each molecule's "
                             "MinAO-density Fock is built on the SCF's grids and stored)")
    parser.add_argument("--no-progress", action="store_true")


def _labelled_qm9(sources: list[str]) -> set[int]:
    """QM9 indices present in the shards of ``sources``."""
    from ..data.label import qm9_indices_in_shards
    return qm9_indices_in_shards(sources)


def run(args: argparse.Namespace) -> int:
    from ..data.label import label_to_shards, molecules_from_qm9, molecules_from_xyz
    if not args.inputs and args.qm9 is None:
        print("qhflow label: give .xyz files/directories or --qm9 START:STOP")
        return 2
    try:
        specs = molecules_from_xyz(args.inputs) if args.inputs else []
        source = "xyz files" if args.inputs else ""
        if args.qm9 is not None:
            specs += molecules_from_qm9(*args.qm9, sample=args.qm9_sample, seed=args.seed,
                                        split=args.qm9_split,
                                        exclude=_labelled_qm9(args.exclude_shards))
            source = "QM9 geometries (B3LYP/6-31G(2df,p) optimized), via qm9pack"
        counts = label_to_shards(specs, args.out, xc=args.xc, basis=args.basis,
                                 grid_level=args.grid_level, conv_tol=args.conv_tol,
                                 max_cycle=args.max_cycle,
                                 shard_size=args.shard_size, shard=args.shard, jobs=args.jobs,
                                 prefix=args.prefix, source=source,
                                 progress=not args.no_progress,
                                 store_hinit=not args.no_hinit, guess=args.guess,
                                 conv_tol_grad=args.conv_tol_grad, model=args.model)
    except (ImportError, FileNotFoundError, ValueError) as err:
        print(f"qhflow label: {err}")
        return 2
    print(f"qhflow label: {len(specs)} molecules; shards written {counts['shards_written']}, "
          f"already present {counts['shards_skipped']}; labelled {counts['labelled']}, "
          f"failed {counts['failed']}, unconverged {counts['unconverged']} "
          f"(listed in each shard's 'failures' attribute)")
    return 0
