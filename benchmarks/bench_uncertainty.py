"""Error bars for one-shot energies: calibrate on validation, check on test and outside QM9.

For every molecule the one-shot evaluation (``pyscf_qhflow.oneshot``, energies
only) gives E_KS, E_Harris and the three raw signals of
``pyscf_qhflow.uncertainty`` (bracket half-width, orbital-gradient norm
squared, spread of K prior samples; K = 4, seed 0).  The reference is the
converged SCF energy stored in the shard (``energy``; ``--check-ref`` checks
it against the one-shot energy of the stored converged Fock matrix on the
first molecule).  Molecules given with ``--xyz`` (outside QM9) get their
reference from one SCF each, started from the qhflow guess, or from the
converged MinAO rows of ``qhflow bench scf`` CSVs given with ``--ref-csv``.

Calibration: for each signal and each estimate (``e_tot``, ``e_mid``) the
scales are split-conformal 68% and 95% quantiles of ``|error| / signal`` on
the validation split (``uncertainty.fit_scales``), and the signal the model's
error bars use is chosen on validation by ``uncertainty.choose_signal``
(leave-one-out coverage, then width); OUT/scales.json holds both, in the
shape of a model card's ``"uncertainty"`` entry.  Reported per split: coverage of the 68% and 95%
intervals, mean 68%/95% half-width against the mean |error|, Spearman rank
correlation of signal and |error|.  The guess's bound (density spread ->
E_KS error, 95%) is fitted the same way.  ``--minao N`` also evaluates the
MinAO guess's energy error on the first N test molecules (one Fock build
each), the yardstick for the guess's fallback threshold.

    OMP_NUM_THREADS=1 python benchmarks/bench_uncertainty.py --shards ../shared/data \\
        --out benchmarks/out/uncertainty [--xyz benchmarks/molecules/druglike/*.xyz]

Rows go to OUT/uncertainty.csv (resumable); tables to stdout and
OUT/tables.md; the reliability plot to OUT/reliability.png.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from pyscf import gto

from pyscf_qhflow.benchmark import csv_appender, read_rows
from pyscf_qhflow.checkpoint import load_model
from pyscf_qhflow.data.dataset import ShardDataset
from pyscf_qhflow.data.shardfile import find_shards
from pyscf_qhflow.data.splits import split_indices
from pyscf_qhflow.guess.hook import resolve_model
from pyscf_qhflow.oneshot import oneshot
from pyscf_qhflow.scfrun import load_molecule, make_scf, run_scf
from pyscf_qhflow.uncertainty import CALIBRATION, ESTIMATES, SIGNALS, choose_signal, fit_scales
from pyscf_qhflow.units import HARTREE_TO_MEV

NUM_SAMPLES = 4
FIELDS = ["molecule", "split", "natm", "e_ref", "e_tot", "e_harris", "bracket", "gradient",
          "samples", "density_spread", "e_minao", "t_oneshot"]


class FixedFock:
    """Predictor returning the stored converged Fock matrix (the SCF reference)."""

    name = "converged"

    def __init__(self, fock):
        self.fock = fock

    def predict_fock(self, mol):
        return self.fock


def _mol(rec, basis="def2-svp"):
    return gto.M(atom=[(int(z), r) for z, r in zip(rec["Z"], rec["pos"])], basis=basis,
                 unit="Angstrom", verbose=0)


def _row(name, split, mol, e_ref, predictor, grid_level, minao: bool) -> dict:
    t0 = time.perf_counter()
    mf = make_scf(mol, grid_level=grid_level)
    res = oneshot(mf, forces=False, model=predictor, num_samples=NUM_SAMPLES, seed=0)
    sig = res.uncertainty.signals
    row = {"molecule": name, "split": split, "natm": mol.natm, "e_ref": e_ref,
           "e_tot": res.e_tot, "e_harris": res.e_harris,
           **{k: sig.get(k) for k in ("bracket", "gradient", "samples", "density_spread")},
           "e_minao": None, "t_oneshot": time.perf_counter() - t0}
    if minao:
        row["e_minao"] = float(mf.energy_tot(mf.init_guess_by_minao(mol)))
    return row


def reference_energies(paths: list[str]) -> dict[str, float]:
    """Converged MinAO-guess energies (Hartree) by molecule from ``qhflow bench scf`` CSVs.

    The same protocol as the SCF run here (grid level 3, conv_tol 1e-10 unless
    the CSV says otherwise; its ``conv_tol`` column is checked).
    """
    refs = {}
    for path in paths:
        for r in read_rows(Path(path)):
            if r["guess"] != "minao" or r["converged"] != "True":
                continue
            if float(r["conv_tol"]) > 1e-9:
                raise SystemExit(f"{path}: {r['molecule']} converged to conv_tol {r['conv_tol']}, "
                                 "too loose for a reference energy")
            refs[r["molecule"]] = float(r["e_tot"])
    return refs


def collect(ds, splits: dict, xyz: list[str], predictor, out: Path, grid_level: int,
            minao_n: int, refs: dict[str, float] | None = None) -> list[dict]:
    """One-shot rows for the val/test splits and ``xyz`` (reference: ``refs`` or one SCF each)."""
    refs = refs or {}
    csv_path = out / "uncertainty.csv"
    done = {r["molecule"] for r in read_rows(csv_path)}
    with csv_appender(csv_path, FIELDS) as (f, w):
        # splits interleaved, so that a partial run has molecules of each
        order = sorted(((n, split, i) for split, idx in splits.items()
                        for n, i in enumerate(idx)), key=lambda t: t[0])
        for n, split, i in order:
            idx = splits[split]
            rec = ds[i]
            name = f"qm9_{int(rec['qm9_index'])}"
            if name in done:
                continue
            row = _row(name, split, _mol(rec), float(rec["energy"]), predictor, grid_level,
                       minao=split == "test" and n < minao_n)
            w.writerow(row)
            f.flush()
            print(f"[{split} {n + 1}/{len(idx)}] {name}: KS err "
                  f"{(row['e_tot'] - row['e_ref']) * HARTREE_TO_MEV:.1f} meV, bracket "
                  f"{row['bracket'] * HARTREE_TO_MEV:.1f} meV, {row['t_oneshot']:.1f} s",
                  file=sys.stderr)
        for path in xyz:
            name = Path(path).stem
            if name in done:
                continue
            mol = load_molecule(path, "def2-svp", 0, None, 0)
            t0 = time.perf_counter()
            if name in refs:
                e_ref = refs[name]
            else:
                mf = make_scf(mol, grid_level=grid_level)
                mf.qhflow_model = predictor
                ref = run_scf(mf, "qhflow")
                if not ref["converged"]:
                    print(f"{name}: SCF did not converge, skipped", file=sys.stderr)
                    continue
                e_ref = float(ref["e_tot"])
            row = _row(name, "outside", mol, e_ref, predictor, grid_level, False)
            w.writerow(row)
            f.flush()
            print(f"[outside] {name}: SCF {time.perf_counter() - t0:.0f} s, KS err "
                  f"{(row['e_tot'] - row['e_ref']) * HARTREE_TO_MEV:.1f} meV", file=sys.stderr)
    return read_rows(csv_path)


def _arrays(rows: list[dict]) -> dict:
    a = {k: np.array([float(r[k]) for r in rows]) for k in
         ("e_ref", "e_tot", "e_harris", "bracket", "gradient")}
    a["samples"] = np.array([float(r["samples"]) if r.get("samples") not in (None, "")
                             else np.nan for r in rows])
    a["density_spread"] = np.array([float(r["density_spread"])
                                    if r.get("density_spread") not in (None, "") else np.nan
                                    for r in rows])
    a["err_e_tot"] = a["e_tot"] - a["e_ref"]
    a["err_e_mid"] = 0.5 * (a["e_tot"] + a["e_harris"]) - a["e_ref"]
    return a


def fit(val: dict) -> tuple[dict, str, dict]:
    """Conformal scales, the chosen signal and its leave-one-out scores, from validation alone."""
    signals = {n: val[n] for n in SIGNALS if np.all(np.isfinite(val[n]))}
    scales = fit_scales({e: val[f"err_{e}"] for e in ESTIMATES}, signals,
                        val["density_spread"])
    chosen, loo = choose_signal(val["err_e_tot"], signals)
    return scales, chosen, loo


def loo_table(loo: dict, chosen: str) -> str:
    lines = ["| signal (Kohn-Sham energy) | leave-one-out 95% coverage (val) | mean 95% "
             "half-width (meV) | chosen |", "|---|---|---|---|"]
    for name, (cov, width) in loo.items():
        lines.append(f"| {name} | {cov:.3f} | {width * HARTREE_TO_MEV:.1f} | "
                     f"{'yes' if name == chosen else ''} |")
    return "\n".join(lines)


def _spearman(x, y) -> float:
    from scipy.stats import spearmanr
    return float(spearmanr(x, y).statistic)


def table(splits: dict[str, dict], scales: dict) -> str:
    lines = ["| split | n | signal | estimate | 68% coverage | 95% coverage | mean 68% "
             "half-width (meV) | mean 95% half-width (meV) | mean abs error (meV) | "
             "Spearman(signal, abs error) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for split, a in splits.items():
        n = len(a["e_ref"])
        for s in (s for s in SIGNALS if s in scales):
            x = np.abs(a[s])
            for e in ESTIMATES:
                err = np.abs(a[f"err_{e}"])
                w68, w95 = scales[s][e]["scale68"] * x, scales[s][e]["scale95"] * x
                lines.append(
                    f"| {split} | {n} | {s} | {e} | {np.mean(err <= w68):.2f} | "
                    f"{np.mean(err <= w95):.2f} | {w68.mean() * HARTREE_TO_MEV:.1f} | "
                    f"{w95.mean() * HARTREE_TO_MEV:.1f} | {err.mean() * HARTREE_TO_MEV:.1f} | "
                    f"{_spearman(x, err):.2f} |")
    return "\n".join(lines)


def guess_table(splits: dict[str, dict], rows: list[dict], scales: dict) -> str:
    lines = ["| split | n | Spearman(density spread, E_KS error) | 95% bound coverage | "
             "max 95% bound (mHa) | max E_KS error (mHa) |", "|---|---|---|---|---|---|"]
    for split, a in splits.items():
        bound = scales["guess"]["scale95"] * a["density_spread"]
        err = a["err_e_tot"]
        lines.append(f"| {split} | {len(err)} | {_spearman(a['density_spread'], err):.2f} | "
                     f"{np.mean(err <= bound):.2f} | {bound.max() * 1e3:.2f} | "
                     f"{err.max() * 1e3:.2f} |")
    minao = [(abs(float(r["e_minao"]) - float(r["e_ref"])),
              abs(float(r["e_tot"]) - float(r["e_ref"])))
             for r in rows if r.get("e_minao") not in (None, "")]
    if minao:
        m = np.array(minao)
        lines += ["", f"|MinAO guess energy error| on {len(m)} test molecules: min "
                      f"{m[:, 0].min() * 1e3:.1f} mHa, median {np.median(m[:, 0]) * 1e3:.1f} mHa; "
                      f"|qhflow guess energy error| (E_KS at the predicted density): max "
                      f"{m[:, 1].max() * 1e3:.2f} mHa; guess worse than MinAO on "
                      f"{int(np.sum(m[:, 1] > m[:, 0]))} of {len(m)}"]
    return "\n".join(lines)


def reliability_plot(splits: dict[str, dict], scales: dict, signal: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, e in zip(axes, ESTIMATES):
        lo, hi = np.inf, 0.0
        for (split, a), marker in zip(splits.items(), "os^"):
            w = scales[signal][e]["scale68"] * np.abs(a[signal]) * HARTREE_TO_MEV
            err = np.abs(a[f"err_{e}"]) * HARTREE_TO_MEV
            ax.scatter(w, err, marker=marker, s=18, label=f"{split} ({len(err)})", alpha=0.75)
            lo, hi = min(lo, w.min(), err[err > 0].min()), max(hi, w.max(), err.max())
        t = np.geomspace(lo, hi, 10)
        ratio95 = scales[signal][e]["scale95"] / scales[signal][e]["scale68"]
        ax.plot(t, t, "k-", lw=1, label="|error| = 68% half-width")
        ax.plot(t, ratio95 * t, "k--", lw=1, label="|error| = 95% half-width")
        ax.set(xscale="log", yscale="log", xlabel=f"predicted 68% half-width (meV, {signal})",
               ylabel="actual |error| vs SCF (meV)", title=e)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", required=True, nargs="+")
    p.add_argument("--model", default="default")
    p.add_argument("--limit", type=int, default=None, help="molecules per split")
    p.add_argument("--xyz", nargs="*", default=[], help="molecules outside QM9 (one SCF each)")
    p.add_argument("--ref-csv", nargs="*", default=[],
                   help="qhflow bench scf CSVs whose converged MinAO energies are the --xyz "
                        "molecules' references (no SCF here for those)")
    p.add_argument("--grid-level", type=int, default=3)
    p.add_argument("--minao", type=int, default=5,
                   help="MinAO guess energy on the first N test molecules")
    p.add_argument("--check-ref", action="store_true",
                   help="check the stored energy against the converged Fock's one-shot energy")
    p.add_argument("--report-only", action="store_true", help="tables from the CSV, no runs")
    p.add_argument("--out", default="benchmarks/out/uncertainty")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = ShardDataset(find_shards(args.shards))
    splits = {s: split_indices(ds, s)[:args.limit] for s in ("val", "test")}
    if args.check_ref:
        rec = ds[splits["val"][0]]
        mol = _mol(rec)
        e = oneshot(make_scf(mol, grid_level=args.grid_level), forces=False,
                    model=FixedFock(rec["fock"])).e_tot
        print(f"stored energy - one-shot energy of the stored Fock: "
              f"{(float(rec['energy']) - e) * 1e6:.3f} µHa", file=sys.stderr)
    if args.report_only:
        rows = read_rows(out / "uncertainty.csv")
    else:
        predictor = resolve_model(model=load_model(args.model))
        rows = collect(ds, splits, args.xyz, predictor, out, args.grid_level, args.minao,
                       reference_energies(args.ref_csv))
    by_split = {s: _arrays([r for r in rows if r["split"] == s])
                for s in ("val", "test", "outside")}
    by_split = {s: a for s, a in by_split.items() if len(a["e_ref"])}
    scales, chosen, loo = fit(by_split["val"])
    text = "\n\n".join([
        "Calibration (fitted on val): " + json.dumps(scales),
        f"Signal chosen on val (uncertainty.choose_signal): {chosen}",
        loo_table(loo, chosen),
        table(by_split, scales),
        "Guess confidence (density spread of 4 prior samples):",
        guess_table(by_split, rows, scales)])
    print(text)
    (out / "tables.md").write_text(text + "\n")
    guess = scales.pop("guess")
    entry = {"default_signal": chosen, "num_samples": NUM_SAMPLES, "scales": scales,
             "guess": {**guess, "fallback_ha": CALIBRATION["guess"]["fallback_ha"]},
             "benchmark": "benchmarks/bench_uncertainty.py " + " ".join(argv or sys.argv[1:])}
    (out / "scales.json").write_text(json.dumps(entry, indent=1) + "\n")
    reliability_plot(by_split, scales, chosen, out / "reliability.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
