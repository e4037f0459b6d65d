"""SCF cycles from the qhflow guess of several models, against the labels' MinAO runs.

Every shard molecule was labelled by an SCF from PySCF's MinAO guess with this
benchmark's settings (B3LYP/def2-SVP, grid level 3, conv_tol 1e-10); the shard
stores its cycle count (``scf_cycles_minao``) and energy (``../shared/data/FORMAT.md``).
So comparing models needs only their qhflow SCFs: about half the cost of
``qhflow bench scf``, which runs MinAO again (and so measures wall-time ratios,
which this script does not).  ``qhflow bench scf`` reproduced the stored MinAO
cycles and energies (to 1e-12 Ha) on the molecules where both ran.

    python benchmarks/scf_vs_labels.py --shards ../shared/data --split test --limit 16 \\
        --models default runs/ft_density/best.pt --jobs 2 --out benchmarks/out/scf_labels

Resumable per (model, molecule); one PySCF thread per job.  Prints one row per
model: mean cycles, ratio to MinAO's (mean, median), how many molecules took
fewer / as many / more cycles, the largest energy difference from the label.
"""
from __future__ import annotations

import argparse
import concurrent.futures
from pathlib import Path

import h5py
import numpy as np

FIELDS = ["model", "molecule", "natm", "cycles", "cycles_minao", "e_tot", "e_label",
          "converged", "qhflow_used", "qhflow_tau", "wall_s"]
_MODELS: dict = {}


def _worker_init() -> None:
    import torch
    from pyscf import lib
    lib.num_threads(1)
    torch.set_num_threads(1)


def _run_one(task: dict) -> dict:
    from pyscf import gto

    import pyscf_qhflow  # noqa: F401  (registers init_guess='qhflow')
    from pyscf_qhflow.checkpoint import load_model
    from pyscf_qhflow.scfrun import make_scf, run_scf

    name = task["model"]
    if name not in _MODELS:
        _MODELS[name] = load_model(name, device="cpu")
    mol = gto.M(atom=[(int(z), r) for z, r in zip(task["Z"], task["R"])], basis="def2-svp",
                unit="Angstrom", verbose=0)
    mf = make_scf(mol, "b3lyp", grid_level=3, conv_tol=1e-10)
    mf.qhflow_model = _MODELS[name]
    row = run_scf(mf, "qhflow")
    return {"model": name, "molecule": task["molecule"], "natm": mol.natm,
            "cycles": row["cycles"], "cycles_minao": task["cycles_minao"],
            "e_tot": repr(row["e_tot"]), "e_label": repr(task["e_label"]),
            "converged": row["converged"], "qhflow_used": row["qhflow_used"],
            "qhflow_tau": row["qhflow_tau"], "wall_s": f"{row['wall_s']:.2f}"}


def summarize(rows: list[dict], models: list[str]) -> str:
    lines = ["| model | molecules | mean cycles | MinAO mean cycles | cycles / MinAO (mean) "
             "| (median) | fewer / same / more | max abs(E - E_label) (Ha) | failures |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for name in models:
        mine = [r for r in rows if r["model"] == name]
        if not mine:
            continue
        ok = [r for r in mine if r["converged"] == "True" and r["qhflow_used"] == "True"]
        c = np.array([int(r["cycles"]) for r in ok], float)
        m = np.array([int(r["cycles_minao"]) for r in ok], float)
        de = max((abs(float(r["e_tot"]) - float(r["e_label"])) for r in ok), default=np.nan)
        lines.append(f"| {name} | {len(ok)} | {c.mean():.2f} | {m.mean():.2f} "
                     f"| {100 * np.mean(c / m):.1f}% | {100 * np.median(c / m):.1f}% "
                     f"| {int((c < m).sum())} / {int((c == m).sum())} / {int((c > m).sum())} "
                     f"| {de:.1e} | {len(mine) - len(ok)} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    from tqdm.auto import tqdm

    from pyscf_qhflow.benchmark import csv_appender, read_rows
    from pyscf_qhflow.data.dataset import ShardDataset
    from pyscf_qhflow.data.shardfile import find_shards
    from pyscf_qhflow.data.splits import split_indices

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", nargs="+", required=True)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--limit", type=int, default=None, help="first N molecules of the split")
    p.add_argument("--models", nargs="+", default=["default"])
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--out", required=True, help="output directory (scf_labels.csv, resumable)")
    args = p.parse_args(argv)

    ds = ShardDataset(find_shards(args.shards))
    idx = split_indices(ds, args.split, args.limit)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "scf_labels.csv"
    done = {(r["model"], r["molecule"]) for r in read_rows(csv_path)}
    tasks = []
    for i in idx:
        path, j = ds.locate(i)
        with h5py.File(path) as f:
            cycles_minao = int(f["scf_cycles_minao"][j])
            qm9 = int(f["qm9_index"][j])
            e_label = float(f["energy"][j])  # the label's SCF energy (Hartree)
        z, r = ds.geometry(i)
        for name in args.models:
            if (name, f"qm9_{qm9}") not in done:
                tasks.append({"model": name, "molecule": f"qm9_{qm9}", "Z": z, "R": r,
                              "cycles_minao": cycles_minao, "e_label": e_label})
    with csv_appender(csv_path, FIELDS) as (f, writer):
        with concurrent.futures.ProcessPoolExecutor(args.jobs, initializer=_worker_init) as pool:
            for row in tqdm(pool.map(_run_one, tasks), total=len(tasks), desc="qhflow SCF"):
                writer.writerow(row)
                f.flush()
    rows = read_rows(csv_path)
    table = summarize(rows, args.models)
    (out / "scf_labels_summary.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
