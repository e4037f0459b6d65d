"""Where the remaining Hamiltonian error sits: on-site blocks and off-site blocks by distance.

Used on the overfit check (issue #4) to see which blocks keep the 20-molecule
fit above 20 µHa::

    python benchmarks/overfit_breakdown.py --model runs/of20_reg_lr2e-3/best.pt \\
        --data ../shared/data --molecules 20

Scores the residual (F* - H_init) prediction of ``--model`` on the first
``--molecules`` shard records, over the real matrix
elements of the e3nn-order blocks, as ``evaluate`` in the training loop does.
Prints a Markdown table: per block class, the share of matrix elements, the
MAE (µHa) and the share of the total absolute error.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from pyscf_qhflow import keys
from pyscf_qhflow.batching import block_masks, collate
from pyscf_qhflow.checkpoint import load_model
from pyscf_qhflow.data.dataset import ShardDataset
from pyscf_qhflow.train.loop import BlockCache
from pyscf_qhflow.units import HARTREE_TO_UHA

DISTANCE_EDGES_ANGSTROM = (0.0, 1.6, 3.0, 5.0, 8.0, np.inf)


@torch.no_grad()
def error_by_block_class(model, cache: BlockCache, batch_size: int = 4,
                         edges=DISTANCE_EDGES_ANGSTROM) -> list[dict]:
    """Rows {class, elements, abs_err_sum (Hartree)} for on-site blocks and distance bins."""
    model.eval()
    names = ["on-site"] + [f"off-site {lo:g}-{hi:g} Å" for lo, hi in zip(edges[:-1], edges[1:])]
    err = np.zeros(len(names))
    count = np.zeros(len(names), dtype=np.int64)
    for start in range(0, len(cache), batch_size):
        batch, _ = collate([cache[i] for i in range(start, min(len(cache), start + batch_size))],
                           model.dtype, model.device)
        pred_on, pred_off = model.sample(batch)
        m_on, m_off = block_masks(batch[keys.SLOT_MASK], batch[keys.PAIR_INDEX])
        d_on = (pred_on - batch[keys.RESIDUAL_ONSITE]).abs()
        d_off = (pred_off - batch[keys.RESIDUAL_OFFSITE]).abs()
        err[0] += float(d_on[m_on].sum())
        count[0] += int(m_on.sum())
        i, j = batch[keys.PAIR_INDEX]
        dist = (batch[keys.POS][i] - batch[keys.POS][j]).norm(dim=-1).cpu().numpy()
        which = np.digitize(dist, edges[1:-1])  # bin of each pair
        per_pair_err = (d_off * m_off).sum(dim=(1, 2)).cpu().numpy()
        per_pair_n = m_off.sum(dim=(1, 2)).cpu().numpy()
        np.add.at(err, 1 + which, per_pair_err)
        np.add.at(count, 1 + which, per_pair_n)
    return [{"class": n, "elements": int(c), "abs_err_sum": float(e)}
            for n, c, e in zip(names, count, err)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="checkpoint file or packaged name")
    p.add_argument("--data", required=True, help="shard directory or glob")
    p.add_argument("--molecules", type=int, default=20, help="the first N shard records")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = load_model(args.model, device="cpu")
    ds = ShardDataset(args.data, with_hinit=True, with_overlap=True)
    idx = np.arange(min(args.molecules, len(ds)))
    cache = BlockCache(ds, idx, model.basis_layout, model.cutoff, model.pair_cutoff,
                       tau=float(model.overlap_damping))
    rows = error_by_block_class(model, cache)
    total_err = sum(r["abs_err_sum"] for r in rows)
    total_n = sum(r["elements"] for r in rows)
    print(f"{args.model} on {len(idx)} molecules: H MAE "
          f"{total_err / total_n * HARTREE_TO_UHA:.1f} µHa over {total_n:,} matrix elements\n")
    print("| block class | share of elements | MAE (µHa) | share of the error |")
    print("|---|---:|---:|---:|")
    for r in rows:
        if r["elements"] == 0:
            continue
        print(f"| {r['class']} | {r['elements'] / total_n:.1%} | "
              f"{r['abs_err_sum'] / r['elements'] * HARTREE_TO_UHA:.1f} | "
              f"{r['abs_err_sum'] / total_err:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
