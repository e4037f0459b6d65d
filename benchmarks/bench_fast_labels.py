"""Fast labels against tight ones: Fock-matrix error and labels per hour, side by side.

For each molecule (held-out test-split molecules of the tight-protocol shards
000-005 by default, so the model never trained on them), in one process, one
thread, one after the other:

* tight: :func:`pyscf_qhflow.data.label.label_molecule` with ``guess='minao'``,
  conv_tol 1e-10 (the QH9 protocol), H_init built beside it;
* fast: ``guess='qhflow'`` (the shipped model's guess, H_init built first on
  the SCF's grids and integrals), conv_tol 1e-8, conv_tol_grad 1e-4.

Reported per molecule: cycles and wall seconds of each (H_init included in
both, as training needs it), the MAE and max error of the fast Fock matrix
against the tight one (both float64, fresh) and against the shard's stored
label (float32), the energy difference.  Resumable CSV.

    OMP_NUM_THREADS=1 python benchmarks/bench_fast_labels.py --shards ../shared/data \\
        --split test --limit 20 --out benchmarks/out/fast_labels
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import h5py
import numpy as np
from pyscf import lib
from tqdm import tqdm

from pyscf_qhflow.benchmark import csv_appender, read_rows
from pyscf_qhflow.data.dataset import ShardDataset
from pyscf_qhflow.data.label import label_molecule
from pyscf_qhflow.data.shardfile import find_shards
from pyscf_qhflow.data.splits import split_indices
from pyscf_qhflow.units import HARTREE_TO_UHA

FIELDS = ["molecule", "natm", "nao", "tight_cycles", "tight_s", "fast_cycles", "fast_s",
          "fock_mae_uha", "fock_max_uha", "fock_mae_vs_stored_uha", "de_ha"]


def _tight_shards(paths: list[Path]) -> list[Path]:
    """Shards labelled with the tight MinAO protocol (they carry scf_cycles_minao only)."""
    out = []
    for p in paths:
        with h5py.File(p, "r") as f:
            if "scf_cycles_minao" in f and "scf_init_guess" not in f:
                out.append(p)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", nargs="+", required=True)
    ap.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--start", type=int, default=0,
                    help="skip the first N of the --limit list (parallel processes, each "
                         "with its own --out; summarize them with --summarize)")
    ap.add_argument("--summarize", nargs="+", default=None, metavar="CSV",
                    help="only print the summary of these fast_labels.csv files")
    ap.add_argument("--model", default=None, help="checkpoint (default: shipped weights)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.summarize:
        by_name = {r["molecule"]: r for path in args.summarize for r in read_rows(Path(path))}
        rows = list(by_name.values())  # a molecule run by two processes counts once
        print(summarize(rows))
        return 0
    lib.num_threads(1)

    ds = ShardDataset(_tight_shards(find_shards(args.shards)))
    indices = split_indices(ds, args.split, args.limit)[args.start:]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "fast_labels.csv"
    done = {r["molecule"] for r in read_rows(csv_path)} if csv_path.exists() else set()
    with csv_appender(csv_path, FIELDS) as (f, writer):
        for i in tqdm(indices, desc="fast vs tight labels"):
            rec = ds[i]
            name = f"qm9_{int(rec['qm9_index'])}"
            if name in done:
                continue
            atoms = (rec["Z"], rec["pos"])
            t0 = time.perf_counter()
            tight = label_molecule(atoms, guess="minao", with_hinit=True)
            t1 = time.perf_counter()
            fast = label_molecule(atoms, guess="qhflow", model=args.model)
            t2 = time.perf_counter()
            err = np.abs(fast["fock"] - tight["fock"])
            writer.writerow({
                "molecule": name, "natm": len(rec["Z"]), "nao": rec["fock"].shape[0],
                "tight_cycles": tight["cycles"], "tight_s": round(t1 - t0, 2),
                "fast_cycles": fast["cycles"], "fast_s": round(t2 - t1, 2),
                "fock_mae_uha": err.mean() * HARTREE_TO_UHA,
                "fock_max_uha": err.max() * HARTREE_TO_UHA,
                "fock_mae_vs_stored_uha": np.abs(fast["fock"] - rec["fock"]).mean()
                * HARTREE_TO_UHA,
                "de_ha": fast["energy"] - tight["energy"]})
            f.flush()
    rows = read_rows(csv_path)
    text = summarize(rows)
    (out / "fast_labels.md").write_text(text + "\n")
    print(text)
    return 0


def summarize(rows: list[dict]) -> str:
    def col(k):
        return [float(r[k]) for r in rows]

    tight_s, fast_s = sum(col("tight_s")), sum(col("fast_s"))
    mae = col("fock_mae_uha")
    lines = [
        f"{len(rows)} molecules, one thread each, one after the other",
        "",
        "| protocol | mean cycles | mean s / label | labels / hour (1 core) |",
        "|---|---|---|---|",
        f"| tight: MinAO, conv_tol 1e-10 | {statistics.mean(col('tight_cycles')):.1f} | "
        f"{tight_s / len(rows):.1f} | {3600 * len(rows) / tight_s:.0f} |",
        f"| fast: qhflow guess, conv_tol 1e-8, grad 1e-4 | "
        f"{statistics.mean(col('fast_cycles')):.1f} | {fast_s / len(rows):.1f} | "
        f"{3600 * len(rows) / fast_s:.0f} |",
        "",
        f"Fock MAE fast vs tight: mean {statistics.mean(mae):.3f} µHa, max over molecules "
        f"{max(mae):.3f} µHa; largest element error {max(col('fock_max_uha')):.2f} µHa; "
        f"vs the stored float32 label {statistics.mean(col('fock_mae_vs_stored_uha')):.3f} µHa; "
        f"|dE| max {max(abs(x) for x in col('de_ha')):.1e} Ha",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
