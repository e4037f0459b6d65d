"""H MAE and guess-density error of one or more models on a split of the shards.

For each model and molecule: the H MAE (µHa) of the prediction before the
overlap damping (what training sees), and the error of the aufbau guess
density of the prediction as inference assembles it, ``F = H_init + W R W``
(tau from the model; the gap guard, which raises tau on no QM9 molecule, is
left out): exact, ``sqrt(Tr[(D - D*) S (D - D*) S])`` as in
:func:`pyscf_qhflow.benchmark.fock_metrics`, and to first order, the
quantity the density loss of :mod:`pyscf_qhflow.train.loss` trains.

    python benchmarks/density_error_table.py --shards ../shared/data --split val \\
        --models default runs/ft_control/best.pt runs/ft_density/best.pt
"""
from __future__ import annotations

import argparse

import numpy as np
import torch


def main(argv=None) -> None:
    from pyscf_qhflow.checkpoint import load_model
    from pyscf_qhflow.data.dataset import ShardDataset
    from pyscf_qhflow.data.shardfile import find_shards
    from pyscf_qhflow.data.splits import split_indices
    from pyscf_qhflow.train.loop import BlockCache, evaluate, evaluate_density_error
    from pyscf_qhflow.train.loss import linear_density_error

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", nargs="+", required=True)
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--models", nargs="+", default=["default"])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    ds = ShardDataset(find_shards(args.shards), with_hinit=True, with_overlap=True)
    idx = split_indices(ds, args.split)
    print(f"{len(idx)} {args.split} molecules\n")
    print("| model | sha256 | H MAE (µHa) | guess-density error | first-order density error |")
    print("|---|---|---:|---:|---:|")
    for name in args.models:
        model = load_model(name, device="cpu")
        cache = BlockCache(ds, idx, model.basis_layout, model.cutoff, model.pair_cutoff,
                           dense=True, tau=model.overlap_damping)
        h_mae = evaluate(model, cache)
        exact = evaluate_density_error(model, cache)
        linear = [_linear(model, cache, i, linear_density_error) for i in range(len(cache))]
        print(f"| {name} | `{model.card['sha256'][:8]}` | {h_mae:.1f} | {exact:.4f} "
              f"| {np.mean(linear):.4f} |")


@torch.no_grad()
def _linear(model, cache, i: int, linear_density_error) -> float:
    from pyscf_qhflow.batching import collate
    from pyscf_qhflow.blocks import assemble_blocks

    batch, info = collate([cache[i]], model.dtype, model.device)
    model.eval()
    on, off = model.sample(batch)
    r = assemble_blocks(on.double(), off.double(), info.layouts[0], info.pairs[0])
    return float(linear_density_error([r], [cache.dense_data(i, ("density",))["density"]]))


if __name__ == "__main__":
    main()
