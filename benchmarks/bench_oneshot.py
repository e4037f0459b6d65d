"""One-shot ML-DFT accuracy: energy and forces at the predicted density vs converged SCF.

The reference is PySCF's energy and analytic gradient at the *converged*
density of the labelled shard (the stored converged Fock matrix fed through
the same one-shot path reproduces the SCF energy to 1e-8 Ha and gradient to
1e-6 Ha/Bohr, see tests/test_oneshot.py), so no SCF is rerun here.

    python benchmarks/bench_oneshot.py --shards ../shared/data --limit 30 \
        --model weights/default.pt --out benchmarks/out/oneshot
    python benchmarks/bench_oneshot.py ... --fd   # gradient vs finite differences
    python benchmarks/bench_oneshot.py ... --no-forces   # energies only

Each row also has the Harris-Foulkes energy from the same Fock build
(``OneShotResult.e_harris``); the second table counts how often the SCF
energy lies between it and the Kohn-Sham one-shot energy.

Prints markdown tables; rows go to OUT/oneshot.csv (resumable).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
from pyscf import gto

from pyscf_qhflow.benchmark import csv_appender, read_rows
from pyscf_qhflow.checkpoint import load_model
from pyscf_qhflow.data.dataset import ShardDataset
from pyscf_qhflow.data.shardfile import find_shards
from pyscf_qhflow.data.splits import split_indices
from pyscf_qhflow.oneshot import oneshot
from pyscf_qhflow.scfrun import make_scf
from pyscf_qhflow.units import BOHR_TO_ANGSTROM, HARTREE_TO_MEV as HARTREE_MEV

FORCE_UNIT = HARTREE_MEV / BOHR_TO_ANGSTROM  # Hartree/Bohr -> meV/Angstrom
FIELDS = ["molecule", "natm", "de_mev", "de_harris_mev", "force_mae_mev_a", "t_inference",
          "t_energy", "t_gradient"]


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


def run_accuracy(ds, idx, model, out: Path, grid_level: int,
                 forces: bool = True) -> list[dict]:
    csv_path = out / "oneshot.csv"
    done = {r["molecule"] for r in read_rows(csv_path)}
    with csv_appender(csv_path, FIELDS) as (f, w):
        for n, i in enumerate(idx):
            rec = ds[i]
            name = f"qm9_{int(rec['qm9_index'])}"
            if name in done:
                continue
            mol = _mol(rec)
            ref = oneshot(make_scf(mol, grid_level=grid_level), forces=forces,
                          model=FixedFock(rec["fock"]))
            pred = oneshot(make_scf(mol, grid_level=grid_level), forces=forces, model=model)
            row = {"molecule": name, "natm": mol.natm,
                   "de_mev": (pred.e_tot - ref.e_tot) * HARTREE_MEV,
                   "de_harris_mev": (pred.e_harris - ref.e_tot) * HARTREE_MEV,
                   "force_mae_mev_a": (float(np.abs(pred.grad - ref.grad).mean() * FORCE_UNIT)
                                       if forces else None),
                   **{f"t_{k}": v for k, v in pred.timings.items()}}
            w.writerow(row)
            f.flush()
            force = "" if not forces else f", force MAE {row['force_mae_mev_a']:.1f} meV/A"
            print(f"[{n + 1}/{len(idx)}] {name}: dE {row['de_mev']:.1f} meV (Harris "
                  f"{row['de_harris_mev']:.1f}){force}", file=sys.stderr)
    return read_rows(csv_path)


def _column(rows: list[dict], key: str) -> list[float]:
    """A column's values, skipping rows without it (energy-only runs, older CSVs)."""
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


def summarize(rows: list[dict]) -> str:
    de = [abs(x) for x in _column(rows, "de_mev")]
    fm = _column(rows, "force_mae_mev_a")
    t = {k: _column(rows, f"t_{k}") for k in ("inference", "energy", "gradient")}

    def mean(xs: list[float], fmt: str) -> str:
        return format(statistics.mean(xs), fmt) if xs else "-"

    lines = [
        "| molecules | energy MAE (meV) | energy median abs err (meV) | force MAE (meV/Å) | "
        "inference (s) | energy (s) | gradient (s) |",
        "|---|---|---|---|---|---|---|",
        f"| {len(rows)} | {statistics.mean(de):.1f} | {statistics.median(de):.1f} | "
        f"{mean(fm, '.1f')} | {mean(t['inference'], '.2f')} | {mean(t['energy'], '.2f')} | "
        f"{mean(t['gradient'], '.2f')} |"]
    pairs = [(float(r["de_mev"]), float(r["de_harris_mev"])) for r in rows
             if r.get("de_harris_mev") not in (None, "")]
    if pairs:
        # the SCF energy is 0 here: a bracket holds when Harris <= 0 <= Kohn-Sham
        bracketed = sum(h <= 0.0 <= ks for ks, h in pairs)
        lines += [
            "",
            "| molecules | Kohn-Sham MAE (meV) | Harris MAE (meV) | mean of the two, MAE (meV) | "
            "SCF energy inside [Harris, Kohn-Sham] |",
            "|---|---|---|---|---|",
            f"| {len(pairs)} | {statistics.mean(abs(ks) for ks, _ in pairs):.1f} | "
            f"{statistics.mean(abs(h) for _, h in pairs):.1f} | "
            f"{statistics.mean(abs(ks + h) / 2 for ks, h in pairs):.1f} | "
            f"{bracketed} of {len(pairs)} |"]
    return "\n".join(lines)


def finite_difference_check(rec, model, grid_level: int, step: float = 1e-3) -> str:
    """Analytic one-shot gradient vs central differences of the one-shot energy.

    Also shows the gradient with the Pulay term from the predicted Fock
    matrix's eigenvalues (what ``oneshot`` used before the seventeenth
    session) and the converged SCF gradient.
    """
    mol = _mol(rec)
    mf = make_scf(mol, grid_level=grid_level)
    res = oneshot(mf, model=model)
    g = res.grad
    g_eig = mf.nuc_grad_method().kernel(res.mo_energy, res.mo_coeff, res.mo_occ)
    g_scf = oneshot(make_scf(mol, grid_level=grid_level), model=FixedFock(rec["fock"])).grad
    lines = ["| atom | axis | finite diff. (Ha/Bohr) | analytic - f.d. | predicted-eigenvalue "
             "Pulay term - f.d. | SCF gradient - f.d. |",
             "|---|---|---|---|---|---|"]
    coords = mol.atom_coords()  # Bohr
    for atom, axis in [(0, 0), (1, 1), (2, 2)]:
        e = []
        for sign in (1, -1):
            c = coords.copy()
            c[atom, axis] += sign * step
            m = mol.set_geom_(c, unit="Bohr", inplace=False)
            e.append(oneshot(make_scf(m, grid_level=grid_level), forces=False,
                             model=model).e_tot)
        fd = (e[0] - e[1]) / (2 * step)
        lines.append(f"| {atom} | {'xyz'[axis]} | {fd:.6f} | {g[atom, axis] - fd:.2e} | "
                     f"{g_eig[atom, axis] - fd:.2e} | {g_scf[atom, axis] - fd:.2e} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", required=True, nargs="+")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--limit", type=int, default=30)
    p.add_argument("--start", type=int, default=0,
                   help="skip the first N molecules of the split (to share the "
                        "--limit list between processes, each with its own --out)")
    p.add_argument("--model", default="default")
    p.add_argument("--grid-level", type=int, default=3)
    p.add_argument("--out", default="benchmarks/out/oneshot")
    p.add_argument("--fd", action="store_true", help="finite-difference check on one molecule")
    p.add_argument("--no-forces", action="store_true",
                   help="energies only (Kohn-Sham and Harris), no gradients")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model)
    ds = ShardDataset(find_shards(args.shards))
    idx = split_indices(ds, args.split)[args.start:args.limit]
    if args.fd:
        print(finite_difference_check(ds[idx[0]], model, args.grid_level))
        return 0
    print(summarize(run_accuracy(ds, idx, model, out, args.grid_level,
                                 forces=not args.no_forces)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
