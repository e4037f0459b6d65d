"""Learning curve: test H MAE and guess-density error of every training stage on one split.

Each stage's weights (git history, `CHANGELOG.md` names the commits) are
scored by ``qhflow bench accuracy`` on the same held-out molecules; this
script joins those scores with what each stage cost (the table ``STAGES``
below: steps, batch, hardware minutes and distinct training molecules, as
recorded in `weights/README.md` and RESULTS section 11 when each stage was
trained), then fits power laws

    H MAE = a * (molecule presentations)^-b      (cumulative steps x batch)

and, from the data-only controls of RESULTS section 11 (the same steps from
the same start with and without new molecules), the exponent of the H MAE in
the number of distinct training molecules. From that exponent it says how
many labels 50 and 16 µHa would take at today's recipe.

    # score every stage (weights from git; see CHANGELOG's weight table):
    git show 3b3165a:weights/small_stage2_h100.pt > /tmp/lc/small_stage2_h100.pt   # etc.
    OMP_NUM_THREADS=1 qhflow bench accuracy --shards ../shared/data --split test \\
        --model /tmp/lc/STAGE.pt --out benchmarks/out/lc/STAGE
    python benchmarks/learning_curve.py --scores benchmarks/out/lc --plot benchmarks/figures/learning_curve.png
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import numpy as np

from pyscf_qhflow.benchmark import read_rows

# What each stage was trained with (inputs, not results). minutes x threads are
# its CPU thread-hours; stage 2's row carries stage 1's CPU time (47.5 min on
# 2 cores) and none for its 11.2 H100 minutes.
STAGES = [
    # name (benchmarks/out/lc/NAME), stage, steps, batch, molecules, hardware, minutes, threads
    ("small_stage2_h100", "2", 3600 * 4 // 16 + 2200, 16, 237, "stage 1: 2 CPU cores 47.5 min; "
     "stage 2: one H100 11.2 min", 47.5, 2),
    ("small_stage3_cpu", "3", 5000, 4, 237, "2 CPU threads", 65.0, 2),
    ("small_stage4_data_cpu", "4", 2600, 4, 312, "1 CPU thread", 53.0, 1),
    ("stage5_default", "5 (default)", 2600, 4, 387, "1 CPU thread", 54.0, 1),
    ("small_stage6_cpu", "6", 4800, 4, 387, "1 CPU thread", 93.0, 1),
    ("small_stage7_2700", "7, step 2,700", 2700, 4, 390, "1 CPU thread", 86.0, 1),
    ("small_stage7_3988", "7, step 3,988", 1288, 4, 390, "2 CPU threads", 16.0, 2),
    ("small_stage9_cpu", "9", 3600, 8, 390, "1 CPU thread", 90.0, 1),
    ("small_stage10_cpu", "10, step 9,000", 9000, 8, 390, "1 CPU thread", 405.8, 1),
]
# Stage 2's row folds stage 1 (3,600 x 4) into batch-16 steps for the
# presentation count: 3,600 * 4 / 16 + 2,200 steps of 16 = 49,600 presentations.

# Data-only controls, RESULTS section 11 (31 test molecules; the same 2,600
# steps from the same start): (molecules, test H MAE µHa) with / without new data.
CONTROLS = [((237, 163.3), (312, 154.4)), ((312, 148.2), (387, 145.0))]


def stage_scores(scores_dir: Path, name: str) -> tuple[int, float, float] | None:
    rows = [r for r in read_rows(scores_dir / name / "accuracy.csv") if r["source"] == "qhflow"]
    if not rows:
        return None
    return (len(rows), statistics.mean(float(r["h_mae_uha"]) for r in rows),
            statistics.mean(float(r["density_err"]) for r in rows))


def power_law(x: list[float], y: list[float]) -> tuple[float, float]:
    """(a, b) of y = a x^-b by least squares in log-log."""
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return math.exp(intercept), -slope


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scores", default="benchmarks/out/lc",
                   help="directory of 'qhflow bench accuracy' outputs, one per stage")
    p.add_argument("--plot", default=None, help="write a PNG of H MAE against presentations")
    args = p.parse_args(argv)
    scores = Path(args.scores)
    lines = ["| stage | training molecules | cumulative presentations (steps x batch) | "
             "cumulative CPU thread-hours | test molecules | test H MAE (µHa) | "
             "guess-density error |", "|---|---|---|---|---|---|---|"]
    presentations, thread_hours, mae = 0, 0.0, []
    xs = []
    for name, stage, steps, batch, molecules, hardware, minutes, threads in STAGES:
        presentations += steps * batch
        thread_hours += minutes * threads / 60
        got = stage_scores(scores, name)
        if got is None:
            print(f"(no scores for {name} in {scores})", file=sys.stderr)
            continue
        n, h_mae, dens = got
        xs.append(presentations)
        mae.append(h_mae)
        lines.append(f"| {stage} | {molecules} | {presentations:,} | {thread_hours:.1f} | {n} | "
                     f"{h_mae:.1f} | {dens:.4f} |")
    print("\n".join(lines))
    if len(xs) >= 3:
        a, b = power_law(xs, mae)
        print(f"\nH MAE = {a:.0f} x presentations^-{b:.3f} (stages above, least squares in "
              "log-log); at this rate 50 µHa would take "
              f"{(a / 50) ** (1 / b):.2e} presentations, 16 µHa {(a / 16) ** (1 / b):.2e}.")
    exponents = [math.log(m0 / m1) / math.log(n1 / n0) for (n0, m0), (n1, m1) in CONTROLS]
    print("\nData exponent from the controls (H MAE ~ molecules^-b at equal steps): "
          + ", ".join(f"{e:.3f}" for e in exponents))
    if mae:
        current, molecules = mae[-1], STAGES[-1][4]
        for target in (50.0, 16.0):
            need = [molecules * (current / target) ** (1 / e) for e in exponents]
            print(f"  {target:.0f} µHa from {current:.1f} at {molecules} molecules: "
                  f"{min(need):,.0f} to {max(need):,.0f} molecules (b = "
                  f"{max(exponents):.3f} to {min(exponents):.3f})")
    if args.plot and xs:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.loglog(xs, mae, "o-", label="test H MAE, one point per stage")
        if len(xs) >= 3:
            grid = np.geomspace(min(xs), max(xs) * 3, 50)
            ax.loglog(grid, a * grid ** -b, "--", label=f"fit, exponent {b:.2f}")
        ax.set_xlabel("cumulative molecule presentations (steps x batch)")
        ax.set_ylabel("test H MAE (µHa)")
        ax.legend()
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
