"""Training curve of a run: validation H MAE (micro-Hartree) per checkpointed step.

    python benchmarks/training_curve.py runs/small [--plot benchmarks/figures/training.png]
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--plot", default=None, help="write a PNG of train/val MAE vs step")
    args = p.parse_args(argv)
    rows = list(csv.DictReader((Path(args.run_dir) / "log.csv").open()))
    val = [(int(r["step"]), float(r["time_s"]), float(r["val_mae_uha"])) for r in rows
           if r["val_mae_uha"]]
    print("| step | minutes | validation H MAE (µHa) |\n|---|---|---|")
    for step, t, mae in val:
        print(f"| {step} | {t / 60:.1f} | {mae:.1f} |")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        # a validation-only row (the final step) has no training batch
        train = [(int(r["step"]), float(r["train_mae_uha"])) for r in rows
                 if r["train_mae_uha"]]
        ax.plot([t[0] for t in train], [t[1] for t in train], lw=0.8, label="train (batch)")
        ax.plot([v[0] for v in val], [v[2] for v in val], "o-", label="validation (EMA)")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("H MAE (µHa)")
        ax.legend()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
