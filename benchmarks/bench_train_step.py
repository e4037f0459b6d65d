"""Where one training step's time goes, and how much caching geometry constants could save.

Times ``--steps`` training steps of a model (batches of ``--batch-size``
training molecules of the shards, their blocks cut once beforehand as
``qhflow train`` does with its ``BlockCache``) split into collate, forward,
backward and the optimizer, and reports molecules per second. A cProfile of
the same steps gives the cumulative time of the per-molecule constants that
the network recomputes every step (edge-frame Wigner-D matrices and radial
bases): the most that caching them across epochs could save.

    OMP_NUM_THREADS=1 python benchmarks/bench_train_step.py --shards ../shared/data \\
        --model weights/small_stage10_cpu.pt --threads 1 --steps 20   # (measured with small_stage7_cpu.pt)
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time

import numpy as np
import torch

from pyscf_qhflow.batching import collate
from pyscf_qhflow.checkpoint import load_model
from pyscf_qhflow.data.dataset import ShardDataset
from pyscf_qhflow.data.splits import split_indices
from pyscf_qhflow.train.loop import BlockCache, TrainConfig, training_step

# functions (module path fragment, name) that depend on the geometry only
# (edge_frames holds every Wigner-D matrix and spherical harmonic the network builds)
GEOMETRY_CONSTANTS = [("nn/backbone.py", "edge_frames"), ("nn/radial.py", "forward")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", nargs="+", required=True)
    p.add_argument("--model", default="default")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--molecules", type=int, default=40, help="training molecules to cycle over")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    ds = ShardDataset(args.shards, with_hinit=True, with_overlap=True)
    idx = split_indices(ds, "train")[:args.molecules]
    cache = BlockCache(ds, idx, model.basis_layout, model.cutoff, model.pair_cutoff)
    for i in range(len(idx)):
        cache[i]  # blocks cut once, as in training
    model.train()
    cfg = TrainConfig()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    gen = torch.Generator().manual_seed(0)

    def step(j: int) -> tuple[float, float, float, float]:
        chosen = [(args.batch_size * j + k) % len(idx) for k in range(args.batch_size)]
        t0 = time.perf_counter()
        batch, _ = collate([cache[i] for i in chosen], torch.float32, torch.device("cpu"))
        t1 = time.perf_counter()
        loss, _ = training_step(model.net, batch, model.flow, model.basis_layout.irreps_str,
                                cfg, gen)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2, t4 - t3

    step(0)  # warm-up
    times = np.array([step(j) for j in range(1, args.steps + 1)])
    per_step = times.sum(1).mean()
    profiler = cProfile.Profile()
    profiler.enable()
    for j in range(args.steps + 1, 2 * args.steps + 1):
        step(j)
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    geometry = 0.0
    for fragment, name in GEOMETRY_CONSTANTS:
        geometry += max((v[3] for (path, _, func), v in stats.items()
                         if func == name and fragment in path), default=0.0)
    geometry /= args.steps
    collate_s, forward_s, backward_s, opt_s = times.mean(0)
    print(f"model {args.model}, {args.threads} thread(s), batch {args.batch_size}, "
          f"{args.steps} steps")
    print("| collate (s) | forward (s) | backward (s) | optimizer (s) | step (s) | molecules/s | "
          "geometry constants, forward (s) | share of the step |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {collate_s:.3f} | {forward_s:.3f} | {backward_s:.3f} | {opt_s:.3f} | "
          f"{per_step:.3f} | {args.batch_size / per_step:.2f} | {geometry:.3f} | "
          f"{100 * geometry / per_step:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
