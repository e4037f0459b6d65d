"""``qhflow train``: train a QHFlow model on labelled shards.

    qhflow train --config small --data DIR --out RUN_DIR [--resume] [--max-minutes M]
                 [--steps N] [--batch-size B] [--lr LR] [--float64] [--val-every N]
                 [--ckpt-minutes M]

Writes ``RUN_DIR/best.pt`` (best EMA weights by validation H MAE, a
checkpoint for :func:`pyscf_qhflow.load_model`), ``RUN_DIR/state.pt``
(resume state) and ``RUN_DIR/log.csv``.  Several GPUs or nodes: launch with
``torchrun --nproc_per_node=G -m pyscf_qhflow.cli.main train ...``; the loop
reads ``WORLD_SIZE``/``RANK`` from the environment.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="small",
                        help="model preset (tiny, small, medium) or a JSON model config")
    parser.add_argument("--data", required=True, nargs="+",
                        help="shard directory, file or glob (several allowed)")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/state.pt")
    parser.add_argument("--init-from", default=None, metavar="CKPT",
                        help="start from the weights (and config) of a checkpoint, e.g. "
                             "'default', with a fresh optimizer and schedule (fine-tuning)")
    add_training_arguments(parser)
    parser.add_argument("--split-seed", type=int, default=0,
                        help="seed of split_by_qm9_index (80/10/10)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--cache-dir", default=None, help="H_init cache directory")
    parser.add_argument("--keep-unconverged", action="store_true",
                        help="train on records with converged = False too (e.g. pseudo-labels "
                             "after a few SCF cycles); by default they are skipped")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the training loop (:class:`~pyscf_qhflow.train.loop.TrainConfig`),
    shared by ``qhflow train`` and ``qhflow learn``; :func:`train_config` reads them."""
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop (and save) after this many minutes of training")
    parser.add_argument("--steps", type=int, default=100_000, help="total optimizer steps")
    parser.add_argument("--batch-size", type=int, default=8, help="molecules per step (per rank)")
    parser.add_argument("--lr", type=float, default=5e-4, help="peak learning rate")
    parser.add_argument("--warmup-steps", type=int, default=1000)
    parser.add_argument("--ema-decay", type=float, default=0.999,
                        help="EMA of the weights (lower for short runs, e.g. 0.99)")
    parser.add_argument("--float64", action="store_true", help="train in float64")
    parser.add_argument("--val-every", type=int, default=1000, help="validate every N steps")
    parser.add_argument("--val-max-molecules", type=int, default=None)
    parser.add_argument("--ckpt-minutes", type=float, default=30.0,
                        help="write RUN_DIR/state.pt every M minutes")
    parser.add_argument("--eig-weight", type=float, default=0.0,
                        help="weight of the occupied-eigenvalue loss (0 = off)")
    parser.add_argument("--density-weight", type=float, default=0.0,
                        help="weight of the first-order guess-density error (0 = off)")
    parser.add_argument("--val-metric", choices=["h_mae", "density"], default="h_mae",
                        help="validation score that chooses best.pt: H MAE, or the error "
                             "of the guess density (default h_mae)")
    parser.add_argument("--choose-k", type=int, nargs="+", default=[], metavar="K",
                        help="candidate numbers of flow Euler steps; the best on the "
                             "validation set is written into best.pt (e.g. 0 1 2 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None,
                        help="cpu or cuda[:i] (default: CUDA when available)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")


def train_config(args: argparse.Namespace, threads: int | None):
    """The :class:`~pyscf_qhflow.train.loop.TrainConfig` of :func:`add_training_arguments`."""
    from ..train.loop import TrainConfig
    return TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                       warmup_steps=min(args.warmup_steps, max(1, args.steps // 10)),
                       val_every=args.val_every, val_max_molecules=args.val_max_molecules,
                       ckpt_minutes=args.ckpt_minutes, max_minutes=args.max_minutes,
                       ema_decay=args.ema_decay,
                       float64=args.float64, eig_weight=args.eig_weight,
                       density_weight=args.density_weight, val_metric=args.val_metric,
                       seed=args.seed,
                       num_threads=threads, device=args.device,
                       progress=not args.no_progress,
                       choose_num_steps=tuple(args.choose_k))


def _model_config(spec: str):
    from ..model import ModelConfig
    path = Path(spec)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"no model config file {path}")
        return ModelConfig.from_dict(json.loads(path.read_text()))
    return ModelConfig.preset(spec)


def initial_model(config_spec: str, init_from: str | None, seed: int, who: str):
    """The model a run starts from: the weights of ``init_from`` (its config; ``config_spec``
    ignored), else a fresh one of ``config_spec`` (preset or JSON) seeded by ``seed``."""
    if init_from is not None:
        from ..checkpoint import load_model
        model = load_model(init_from, device="cpu")
        print(f"{who}: starting from the weights of {init_from} "
              f"(config {model.config.name}); --config is ignored")
        return model
    from ..model import QHFlowModel
    return QHFlowModel.from_config(_model_config(config_spec), seed=seed)


def run(args: argparse.Namespace) -> int:
    from ..data.dataset import ShardDataset
    from ..data.splits import split_by_qm9_index
    from ..train.loop import StopOnSignal, fit

    model = initial_model(args.config, args.init_from, args.seed, "qhflow train")
    config = model.config
    proto = config.protocol
    data = ShardDataset(args.data, xc=proto.xc, basis=proto.basis, with_hinit=True,
                        with_overlap=True, cache_dir=args.cache_dir,
                        exclude_unconverged=not args.keep_unconverged)
    train_idx, val_idx, test_idx = split_by_qm9_index(data, seed=args.split_seed)
    cfg = train_config(args, args.threads)
    card = {"init_from": args.init_from,
            # directory/name: shards of different data sets share names (qm9_..._000.h5)
            "data": {"shards": [f"{p.parent.name}/{p.name}" for p in data.shards],
                     "molecules": len(data)},
            "split": {"method": "split_by_qm9_index", "seed": args.split_seed,
                      "train": len(train_idx), "val": len(val_idx), "test": len(test_idx)}}
    print(f"qhflow train: model {config.name} ({model.num_parameters()} parameters), "
          f"{data!r}; split train/val/test {len(train_idx)}/{len(val_idx)}/{len(test_idx)}")
    # SIGINT/SIGTERM end the run after the current step with best.pt and state.pt
    # written, as --max-minutes does: --resume then loses nothing
    with StopOnSignal() as stopped:
        summary = fit(model, data, data, args.out, cfg, resume=args.resume, card=card,
                      train_indices=train_idx, val_indices=val_idx,
                      stop_when=lambda step: bool(stopped))
    best = (f"H MAE {summary['best_val_score']:.1f} micro-Hartree"
            if summary["val_metric"] == "h_mae"
            else f"guess-density error {summary['best_val_score']:.4f} electrons")
    print(f"qhflow train: stopped at step {summary['step']}; best validation {best}; "
          f"weights in {Path(args.out) / 'best.pt'}")
    return 0
