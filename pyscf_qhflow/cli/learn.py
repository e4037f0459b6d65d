"""``qhflow learn``: label a stream of molecules and train on them as they arrive.

Examples::

    # QM9 in a seeded order (needs qm9pack), replaying the shared shards
    qhflow learn --qm9 1: --replay ../shared/data --init-from default --out runs/learn \
        --label-jobs 1 --train-threads 1 --max-minutes 600
    # a screening library: its converged SCF results and a model tuned to it
    qhflow learn library/ --init-from default --out runs/library       # .xyz files
    qhflow learn --smiles library.smi --init-from default --out runs/library   # needs rdkit

Labels go to ``OUT/shards`` as ordinary shards (``qhflow train --data OUT/shards``
reads them), the training run to ``OUT`` (``state.pt``, ``best.pt``, ``log.csv``)
and the current EMA weights to ``OUT/weights.pt``.  Ctrl-C or SIGTERM stops
cleanly (finished labels flushed, state saved); the same command again resumes
labels and training.  See :mod:`pyscf_qhflow.train.learn`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .label import _range_arg
from .train import add_training_arguments, initial_model, train_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", help="stream: .xyz files or directories of them")
    parser.add_argument("--qm9", type=_range_arg, metavar="START:STOP",
                        help="stream: QM9 molecules with index in [START, STOP) via qm9pack, "
                             "in a seeded order (multiples of 50 never)")
    parser.add_argument("--smiles", default=None, metavar="FILE",
                        help="stream: a SMILES file ('SMILES [name]' a line), embedded "
                             "with RDKit")
    parser.add_argument("--order-seed", type=int, default=0, help="seed of the QM9 order")
    parser.add_argument("--out", required=True, help="run directory (a restart resumes it)")
    parser.add_argument("--replay", action="append", default=[], metavar="SHARDS",
                        help="existing shards to train on too (directory or glob; repeatable)")
    parser.add_argument("--exclude-shards", action="append", default=[], metavar="SHARDS",
                        help="never label QM9 molecules in these shards (repeatable; the "
                             "--replay shards are excluded anyway)")
    parser.add_argument("--val", action="append", default=[], metavar="SHARDS",
                        help="fixed validation shards (default: the validation split of "
                             "the replay shards)")
    parser.add_argument("--config", default="small",
                        help="model preset (tiny, small, medium) or a JSON model config")
    parser.add_argument("--init-from", default=None, metavar="CKPT",
                        help="start from the weights of a checkpoint, e.g. 'default'")
    parser.add_argument("--guess", choices=["qhflow", "minao"], default="qhflow",
                        help="SCF start of the labels: qhflow (fast labels from the model, "
                             "conv_tol 1e-8) or minao (tight protocol, conv_tol 1e-10)")
    parser.add_argument("--label-model", default="current", metavar="CKPT",
                        help="model of the qhflow guess: 'current' (the run's weights.pt, "
                             "refreshed every --ckpt-minutes), 'default' or a checkpoint")
    parser.add_argument("--label-jobs", type=int, default=1,
                        help="labelling worker processes (one core each)")
    parser.add_argument("--train-threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--chunk-size", type=int, default=16, help="molecules per shard")
    parser.add_argument("--min-round-steps", type=int, default=20,
                        help="training steps before a new shard joins the training set")
    parser.add_argument("--max-cycle", type=int, default=100, help="SCF cycles of a label")
    parser.add_argument("--prefix", default=None,
                        help="shard file prefix (default qm9_<xc>_<basis>)")
    parser.add_argument("--cache-dir", default=None,
                        help="H_init cache for replay shards that store none")
    add_training_arguments(parser)
    parser.set_defaults(ckpt_minutes=10.0)


def _stream(args: argparse.Namespace):
    """(specs, the stream's description for learn.json)."""
    from ..data.label import molecules_from_qm9, molecules_from_smiles, molecules_from_xyz
    given = [bool(args.inputs), args.qm9 is not None, args.smiles is not None]
    if sum(given) != 1:
        raise ValueError("give one stream: .xyz files/directories, --qm9 START:STOP or "
                         "--smiles FILE")
    if args.inputs:
        return (molecules_from_xyz(args.inputs),
                {"xyz": [str(Path(p).resolve()) for p in args.inputs], "source": "xyz files"})
    if args.smiles is not None:
        return (molecules_from_smiles(args.smiles),
                {"smiles": str(Path(args.smiles).resolve()),
                 "source": "SMILES embedded with RDKit (ETKDG + MMFF)"})
    return (molecules_from_qm9(*args.qm9, seed=args.order_seed, shuffle=True),
            {"qm9": list(args.qm9), "order_seed": args.order_seed,
             "source": "QM9 geometries (B3LYP/6-31G(2df,p) optimized), via qm9pack"})


def run(args: argparse.Namespace) -> int:
    from ..train.learn import LearnConfig, learn
    try:
        lcfg = LearnConfig(chunk_size=args.chunk_size, label_jobs=args.label_jobs,
                           guess=args.guess, label_model=args.label_model,
                           min_round_steps=args.min_round_steps, max_minutes=args.max_minutes,
                           max_cycle=args.max_cycle, prefix=args.prefix,
                           cache_dir=args.cache_dir)
        stream, info = _stream(args)
        model = initial_model(args.config, args.init_from, args.seed, "qhflow learn")
        summary = learn(stream, args.out, model, train_config(args, args.train_threads), lcfg,
                        replay=args.replay, exclude=args.exclude_shards, val=args.val,
                        stream_info=info, card={"init_from": args.init_from})
    except (ImportError, FileNotFoundError, ValueError) as err:
        print(f"qhflow learn: {err}")
        return 2
    why = f"stopped ({summary['stopped']})" if summary["stopped"] else "done"
    print(f"qhflow learn: {why} at step {summary['step']}; labelled {summary['labelled']} "
          f"this run ({summary['failed']} failed, {summary['unconverged']} unconverged) in "
          f"{summary['shards_written']} new shards; {summary['remaining']} left to label; "
          f"weights in {Path(args.out) / 'weights.pt'}")
    return 0
