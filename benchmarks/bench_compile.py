"""Eager vs ``torch.compile`` inference of the network (``QHFlowModel.compile_net``).

Synthetic QM9-sized molecules (as ``bench_model.py``).  For each preset:
the first compiled call (compilation included), then the median time of
steady-state calls, eager and compiled, for batches of ``--batches``
molecules, and a call on an unseen molecule size (dynamic shapes: no
recompilation expected).  Also checks the compiled output against eager.

    python benchmarks/bench_compile.py --presets small --batches 1 8 --threads 2
    python benchmarks/bench_compile.py --device cuda --batches 1 32 128
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from pyscf_qhflow.batching import make_batch
from pyscf_qhflow.model import QHFlowModel

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_model import QM9_ATOMS, synthetic_record, timed  # noqa: E402


def bench(preset: str, batches: list[int], repeats: int, device: str, mode: str | None) -> dict:
    dev = torch.device(device)
    rng = np.random.default_rng(0)
    model = QHFlowModel.from_config(preset, seed=0).to(dev).eval()
    layout = model.basis_layout

    def batch_of(n, natm=QM9_ATOMS):
        recs = [synthetic_record(natm, layout, rng) for _ in range(n)]
        return make_batch(recs, layout, model.cutoff, model.pair_cutoff, device=dev)[0]

    inputs = {b: batch_of(b) for b in batches}
    row = {"preset": preset, "eager_ms": {}, "compiled_ms": {}, "max_abs_diff": 0.0}
    with torch.no_grad():
        for b, batch in inputs.items():
            model.sample(batch, num_steps=0)
            row["eager_ms"][b] = 1e3 * float(np.median(
                [timed(lambda: model.sample(batch, num_steps=0), dev) for _ in range(repeats)]))
        reference = {b: model.sample(inputs[b], num_steps=0) for b in batches}

        model.compile_net(mode=mode)
        t0 = time.perf_counter()
        first = next(iter(inputs))
        model.sample(inputs[first], num_steps=0)
        row["first_call_s"] = time.perf_counter() - t0
        for b, batch in inputs.items():
            model.sample(batch, num_steps=0)  # a new shape may still compile once
            row["compiled_ms"][b] = 1e3 * float(np.median(
                [timed(lambda: model.sample(batch, num_steps=0), dev) for _ in range(repeats)]))
            out = model.sample(batch, num_steps=0)
            err = max(float((o - r).abs().max()) for o, r in zip(out, reference[b]))
            row["max_abs_diff"] = max(row["max_abs_diff"], err)
        unseen = batch_of(1, natm=QM9_ATOMS + 7)
        row["unseen_size_s"] = timed(lambda: model.sample(unseen, num_steps=0), dev)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["small"])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--mode", default=None, help="torch.compile mode (default, reduce-overhead, "
                                                "max-autotune)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    where = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
             else f"CPU, {args.threads} threads")
    print(f"torch {torch.__version__}, {where}, K = 0 (one network call), "
          f"{QM9_ATOMS}-atom synthetic molecules\n")
    print("| preset | batch | eager ms | compiled ms | speed-up |")
    print("|---|---|---|---|---|")
    for preset in args.presets:
        row = bench(preset, args.batches, args.repeats, args.device, args.mode)
        for b in args.batches:
            e, c = row["eager_ms"][b], row["compiled_ms"][b]
            print(f"| {preset} | {b} | {e:.1f} | {c:.1f} | {e / c:.2f}x |")
        print(f"\n{preset}: first compiled call {row['first_call_s']:.1f} s; a molecule of an "
              f"unseen size {row['unseen_size_s']:.2f} s; compiled vs eager max |diff| "
              f"{row['max_abs_diff']:.1e} Ha\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
