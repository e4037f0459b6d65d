"""Model benchmarks: size, training throughput, inference time and memory per preset.

    python benchmarks/bench_model.py --quick             # seconds: tiny + small, small sizes
    python benchmarks/bench_model.py                      # all presets, 10..200 atoms
    python benchmarks/bench_model.py --overfit --data ../shared/data   # small on 20 molecules
    python benchmarks/bench_model.py --device cuda --throughput 1 8 32  # GPU, batched

Timings are of the *network alone* on synthetic inputs: QM9-sized (or
10..200-atom) random H/C/N/O geometries with atoms at least ~1 Angstrom
apart, and random symmetric matrices in place of H_init, S and F* (the
network's cost does not depend on their values; H_init's own DFT build is
not timed).  Peak memory is the growth of the process's maximum resident set
size (``resource.getrusage``) over the measurement, so it is an upper bound
that includes allocator caching; on a GPU (``--device cuda``) it is
``torch.cuda.max_memory_allocated`` instead, and timings synchronise the
device.  ``--throughput B...`` times batched inference of B QM9-sized
molecules per network call (molecules per second).  ``--overfit`` trains ``small`` on the first
20 molecules of the shards (real H_init, computed or read from the cache)
and reports their H MAE in micro-Hartree.  Output: markdown tables.
"""
from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pyscf_qhflow.aolayout import MolLayout
from pyscf_qhflow.batching import make_batch
from pyscf_qhflow.model import PRESETS, ModelConfig, QHFlowModel
from pyscf_qhflow.train.loop import TrainConfig, training_step

QM9_ATOMS = 18  # typical QM9 molecule: C7H10O2-like


def synthetic_geometry(natm: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random H/C/N/O atoms on a jittered cubic grid (spacing 1.5 A): (Z, pos Angstrom)."""
    side = int(np.ceil(natm ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pos = 1.5 * grid[rng.permutation(len(grid))[:natm]] + 0.15 * rng.standard_normal((natm, 3))
    z = rng.choice([1, 6, 7, 8], size=natm, p=[0.5, 0.3, 0.1, 0.1])
    return z.astype(np.int64), pos


def synthetic_record(natm: int, layout, rng: np.random.Generator) -> dict:
    z, pos = synthetic_geometry(natm, rng)
    nao = MolLayout.from_atomic_numbers(z, layout).nao

    def sym(scale):
        a = scale * rng.standard_normal((nao, nao))
        return 0.5 * (a + a.T)

    h = sym(0.1)
    return {"Z": z, "pos": pos, "hinit": h, "overlap": sym(0.1), "fock": h + sym(0.01)}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


class PeakMemory:
    """Peak memory growth (MB) over a ``with`` block: process RSS on CPU, allocator on CUDA."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self.start = peak_rss_mb()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20 - self.start
        else:
            self.mb = peak_rss_mb() - self.start


def timed(fn, device: torch.device) -> float:
    """Wall seconds of ``fn()``, waiting for the device's queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def bench_preset(name: str, sizes: list[int], train_steps: int, batch_size: int,
                 infer_repeats: int, seed: int = 0, device: str = "cpu",
                 throughput: list[int] = ()) -> dict:
    dev = torch.device(device)
    rng = np.random.default_rng(seed)
    model = QHFlowModel.from_config(name, seed=seed).to(dev)
    layout = model.basis_layout
    row = {"preset": name, "params": model.num_parameters(), "num_steps": model.flow.num_steps}

    def batch_of(recs):
        return make_batch(recs, layout, model.cutoff, model.pair_cutoff, device=dev)[0]

    # training throughput on QM9-sized molecules
    recs = [synthetic_record(QM9_ATOMS, layout, rng) for _ in range(batch_size)]
    batch = batch_of(recs)
    cfg = TrainConfig()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(seed)
    model.train()

    def train_step():
        loss, _ = training_step(model, batch, model.flow, layout.irreps_str, cfg, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()

    with PeakMemory(dev) as mem:
        times = [timed(train_step, dev) for _ in range(train_steps + 1)]  # first warms up
    row["train_mol_per_s"] = batch_size / float(np.median(times[1:]))
    row["train_peak_mb"] = mem.mb

    # inference per molecule, QM9-sized, batch of one
    model.eval()
    one = batch_of(recs[:1])
    with torch.no_grad():
        model.sample(one)
        t = [timed(lambda: model.sample(one), dev) for _ in range(infer_repeats)]
    row["infer_ms_qm9"] = 1e3 * float(np.median(t))

    # batched inference: B QM9-sized molecules per network call
    row["throughput"] = {}
    for b in throughput:
        many = batch_of([synthetic_record(QM9_ATOMS, layout, rng) for _ in range(b)])
        with torch.no_grad():
            model.sample(many)
            tb = [timed(lambda: model.sample(many), dev) for _ in range(max(3, infer_repeats // 2))]
        row["throughput"][b] = b / float(np.median(tb))

    # inference vs molecule size
    row["by_size"] = {}
    for natm in sizes:
        b = batch_of([synthetic_record(natm, layout, rng)])
        with torch.no_grad(), PeakMemory(dev) as mem:
            dt = timed(lambda: model.sample(b), dev)
        row["by_size"][natm] = (1e3 * dt, mem.mb,
                                int(b["edge_index"].shape[1]), int(b["pair_index"].shape[1]))
    return row


def overfit(data: str, steps: int, n_mol: int = 20, preset: str = "small",
            objective: str = "flow", lr: float = 1e-3, batch_size: int = 4,
            out: str | None = None, max_minutes: float | None = None,
            threads: int | None = None, init: str | None = None) -> dict:
    """Train ``preset`` on the first ``n_mol`` shard molecules; H MAE (uHa) on them.

    ``objective``: the flow objective of the preset, or 'regression' (t = 0,
    no prior noise: the plain map geometry -> residual), to separate what the
    network can express from what the flow's noise costs.  ``out``: keep the
    run directory (log.csv, best.pt) and resume from it when it holds a
    state.pt, so a long CPU run survives a stop.  ``init``: a checkpoint whose
    weights replace the random start (same network config required); the
    question "can the network express the target?" does not depend on where
    the optimiser starts, only how long it takes.
    """
    from pyscf_qhflow.data.dataset import ShardDataset
    from pyscf_qhflow.train.loop import fit

    ds = ShardDataset(data, with_hinit=True, with_overlap=True)
    idx = np.arange(min(n_mol, len(ds)))
    model_cfg = ModelConfig.preset(preset).to_dict()
    model_cfg["flow"]["objective"] = objective
    if objective == "regression":
        model_cfg["flow"]["num_steps"] = 0
    model = QHFlowModel.from_config(model_cfg)
    if init:
        from pyscf_qhflow.checkpoint import read_checkpoint
        ckpt = read_checkpoint(init)
        if ckpt["config"]["net"] != model_cfg["net"]:
            raise ValueError(f"{init}: its network config {ckpt['config']['net']} is not "
                             f"the {preset!r} preset's {model_cfg['net']}")
        model.load_state_dict(ckpt["state_dict"])
    cfg = TrainConfig(steps=steps, batch_size=min(batch_size, len(idx)), lr=lr,
                      warmup_steps=min(100, steps // 10), val_every=max(1, steps // 10),
                      ema_decay=0.99, progress=True, max_minutes=max_minutes,
                      ckpt_minutes=5.0, num_threads=threads)
    t0 = time.perf_counter()
    with contextlib.nullcontext(out) if out else tempfile.TemporaryDirectory() as run_dir:
        resume = (Path(run_dir) / "state.pt").is_file()
        summary = fit(model, ds, ds, run_dir, cfg, train_indices=idx, val_indices=idx,
                      resume=resume)
    return {"preset": preset, "objective": objective, "init": init or "random",
            "molecules": len(idx),
            "steps": summary["step"], "h_mae_uha": summary["final_val_mae_uha"],
            "best_uha": summary["best_val_mae_uha"], "wall_s": time.perf_counter() - t0}


def print_tables(rows: list[dict], threads: int, sizes: list[int], device: str = "cpu") -> None:
    where = (torch.cuda.get_device_name(device) if device.startswith("cuda")
             else f"CPU threads: {threads}")
    mem = "peak GPU memory MB" if device.startswith("cuda") else "peak RSS growth MB"
    print(f"{where}; network only, synthetic inputs "
          f"(random symmetric matrices replace H_init/S/F*)\n")
    print(f"| preset | parameters | flow K | train mol/s (QM9-size) | train {mem} "
          "| inference ms/mol (QM9-size) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['preset']} | {r['params']:,} | {r['num_steps']} | "
              f"{r['train_mol_per_s']:.2f} | {r['train_peak_mb']:.0f} | "
              f"{r['infer_ms_qm9']:.1f} |")
    if rows and rows[0]["throughput"]:
        bs = list(rows[0]["throughput"])
        print("\nBatched inference, QM9-sized molecules (molecules/s)\n")
        print("| preset | " + " | ".join(f"batch {b}" for b in bs) + " |")
        print("|---|" + "---:|" * len(bs))
        for r in rows:
            print(f"| {r['preset']} | " + " | ".join(f"{r['throughput'][b]:.1f}" for b in bs)
                  + " |")
    print(f"\nInference vs molecule size (one molecule: ms; {mem}; edges/pairs)\n")
    print("| preset | " + " | ".join(f"{n} atoms" for n in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for r in rows:
        cells = [f"{ms:.0f} ms, {mb:.0f} MB, {e}/{k}" for ms, mb, e, k in
                 (r["by_size"][n] for n in sizes)]
        print(f"| {r['preset']} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny + small, small sizes, few steps")
    p.add_argument("--presets", nargs="+", default=list(PRESETS))
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 25, 50, 100, 200])
    p.add_argument("--train-steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--throughput", type=int, nargs="*", default=[],
                   help="batch sizes for batched-inference molecules/s")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats per size (default 10, 3 with --quick)")
    p.add_argument("--skip-timings", action="store_true", help="only the --overfit part")
    p.add_argument("--overfit", action="store_true", help="train small on 20 shard molecules")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--overfit-steps", type=int, default=3000)
    p.add_argument("--overfit-molecules", type=int, default=20)
    p.add_argument("--overfit-preset", default="small")
    p.add_argument("--overfit-objective", choices=["flow", "regression"], default="flow",
                   help="the preset's flow objective, or plain regression (t = 0, K = 0)")
    p.add_argument("--overfit-lr", type=float, default=1e-3)
    p.add_argument("--overfit-batch-size", type=int, default=4)
    p.add_argument("--overfit-out", default=None,
                   help="keep the run here (log.csv, best.pt); resumes from its state.pt")
    p.add_argument("--overfit-minutes", type=float, default=None,
                   help="stop (state saved) after this many minutes; rerun to resume")
    p.add_argument("--overfit-init", default=None, metavar="CKPT",
                   help="start from these weights (e.g. pyscf_qhflow/weights/default.pt) "
                        "instead of random ones")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.presets = [q for q in args.presets if q in ("tiny", "small")]
        args.sizes, args.train_steps, args.batch_size = [10, 30], 2, 2
    repeats = args.repeats or (3 if args.quick else 10)
    if not args.skip_timings:
        rows = [bench_preset(name, args.sizes, args.train_steps, args.batch_size, repeats,
                             device=args.device, throughput=args.throughput)
                for name in args.presets]
        print_tables(rows, args.threads, args.sizes, args.device)
    if args.overfit:
        o = overfit(args.data, args.overfit_steps, args.overfit_molecules, args.overfit_preset,
                    args.overfit_objective, args.overfit_lr, args.overfit_batch_size,
                    args.overfit_out, args.overfit_minutes, args.threads,
                    args.overfit_init)
        print(f"\nOverfit: {o['preset']} ({o['objective']}, from {o['init']} weights) on "
              f"{o['molecules']} shard "
              f"molecules, {o['steps']} "
              f"steps, {o['wall_s']:.0f} s: H MAE {o['h_mae_uha']:.1f} uHa on those molecules "
              f"(best {o['best_uha']:.1f} uHa)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
