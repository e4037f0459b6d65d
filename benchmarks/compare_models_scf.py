"""Two models' qhflow guesses on the same molecules, paired: SCF cycles against MinAO.

Reads ``qhflow bench scf`` CSVs (one or more per model; MinAO rows from any
of them) and, for each stopping rule the runs record (conv_tol 1e-10, 1e-9,
1 meV of the converged energy), prints per model the mean cycles, the mean
of the per-molecule ratios to MinAO's cycles, and per molecule how often
model B needs fewer, the same or more cycles than model A, with a two-sided
sign test on the molecules where they differ.  Only molecules that both
models and MinAO ran, all converged, are counted.

    python benchmarks/compare_models_scf.py \\
        --a default benchmarks/out/cost_qm9_default_40/scf.csv \\
        --b stage10 benchmarks/out/cost_qm9_s10_40/scf.csv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from pyscf_qhflow.benchmark import read_rows

RULES = (("1e-10", "cycles_1e-10"), ("1e-9", "cycles_1e-9"), ("1 meV", "cycles_1mev"))


def _rows(paths: list[str]) -> tuple[dict, dict]:
    """(qhflow rows by molecule, minao rows by molecule) from bench scf CSVs."""
    qhflow, minao = {}, {}
    for path in paths:
        for r in read_rows(Path(path)):
            if r["converged"] != "True":
                continue
            if r["guess"] == "qhflow":
                qhflow[r["molecule"]] = r
            elif r["guess"] == "minao":
                minao[r["molecule"]] = r
    return qhflow, minao


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign-test p-value for ``wins`` against ``losses`` (ties dropped)."""
    from scipy.stats import binomtest
    return 1.0 if wins + losses == 0 else float(binomtest(wins, wins + losses).pvalue)


def compare(a: dict, b: dict, minao: dict, label_a: str, label_b: str) -> str:
    names = [n for n in a if n in b and n in minao]
    if not names:
        raise SystemExit("no molecule was run by both models and MinAO")
    lines = [f"{len(names)} molecules run by {label_a}, {label_b} and MinAO, all converged", "",
             f"| stop at | MinAO cycles (mean) | {label_a} (mean) | {label_a} / MinAO | "
             f"{label_b} (mean) | {label_b} / MinAO | {label_b} fewer / same / more | "
             "sign test p |", "|---|---|---|---|---|---|---|---|"]
    for rule, col in RULES:
        m = np.array([float(minao[n][col]) for n in names])
        ca = np.array([float(a[n][col]) for n in names])
        cb = np.array([float(b[n][col]) for n in names])
        fewer, more = int(np.sum(cb < ca)), int(np.sum(cb > ca))
        lines.append(f"| {rule} | {m.mean():.2f} | {ca.mean():.2f} | {np.mean(ca / m):.1%} | "
                     f"{cb.mean():.2f} | {np.mean(cb / m):.1%} | {fewer} / "
                     f"{len(names) - fewer - more} / {more} | {sign_test(fewer, more):.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", nargs="+", required=True, metavar=("LABEL", "CSV"),
                   help="model A's label, then its scf.csv files")
    p.add_argument("--b", nargs="+", required=True, metavar=("LABEL", "CSV"),
                   help="model B's label, then its scf.csv files")
    args = p.parse_args(argv)
    if len(args.a) < 2 or len(args.b) < 2:
        p.error("--a and --b take a label and at least one CSV")
    qa, ma = _rows(args.a[1:])
    qb, mb = _rows(args.b[1:])
    print(compare(qa, qb, {**ma, **mb}, args.a[0], args.b[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
