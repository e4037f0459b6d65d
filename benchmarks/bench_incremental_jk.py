"""Would the direct SCF's first J/K be cheaper as an increment from H_init's density?

Why: in direct SCF (molecules too large for in-core integrals) PySCF builds
each cycle's J/K from the density *change* (``get_veff(mol, dm, dm_last,
vhf_last)``); the integral screening then skips what the small change cannot
reach, so later cycles cost less than the first.  The qhflow guess pays a
full J/K pass for H_init = F[D_minao], and the SCF's first build at the guess
density D0 is a second full pass.  Issue #27 asks whether that first build
could be ``J/K[D_minao] + J/K[D0 - D_minao]``, reusing H_init's pass.

What: for each molecule, with the integrals direct (``mf._eri = None``,
``direct_scf = True``, PySCF's default screening), the seconds of
``get_jk`` at D_minao, at D0 (the default model's guess density) and at
``D0 - D_minao``, the largest element of each density, and the increment's
error (``J[D_minao] + J[D0 - D_minao] - J[D0]``, Hartree); for contrast the
seconds at ``1e-3 (D0 - D_minao)``, the size of a late cycle's change.  The increment
pays only if its pass is clearly shorter than the full one.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_incremental_jk.py \
        benchmarks/molecules/druglike/caffeine.xyz --out benchmarks/out/incremental_jk
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np


def timed_jk(mf, mol, dm) -> tuple[float, np.ndarray, np.ndarray]:
    t0 = time.perf_counter()
    vj, vk = mf.get_jk(mol, dm)
    return time.perf_counter() - t0, vj, vk


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("xyz", nargs="+")
    p.add_argument("--out", default="benchmarks/out/incremental_jk")
    args = p.parse_args()

    import pyscf_qhflow  # noqa: F401
    from pyscf_qhflow.guess.hook import density_from_fock, predict_fock
    from pyscf_qhflow.scfrun import load_molecule, load_predictor, make_scf

    model, _ = load_predictor("default")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fields = ["molecule", "atoms", "nao", "max_dm_minao", "max_dm0", "max_ddm",
              "jk_s_dm_minao", "jk_s_dm0", "jk_s_ddm", "jk_s_ddm_1e-3", "increment_err_j", "increment_err_k"]
    with open(out / "incremental_jk.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for path in args.xyz:
            mol = load_molecule(path)
            mf = make_scf(mol)
            mf._eri, mf.direct_scf = None, True
            dm_minao = mf.get_init_guess(mol, "minao")
            dm0, _ = density_from_fock(mf, mol, predict_fock(mol, model))
            ddm = dm0 - dm_minao
            s_minao, vj_minao, vk_minao = timed_jk(mf, mol, dm_minao)
            s_dm0, vj_dm0, vk_dm0 = timed_jk(mf, mol, dm0)
            s_ddm, vj_ddm, vk_ddm = timed_jk(mf, mol, ddm)
            s_small = timed_jk(mf, mol, 1e-3 * ddm)[0]  # the size of a late cycle's change
            row = {"molecule": Path(path).stem, "atoms": mol.natm, "nao": mol.nao_nr(),
                   "max_dm_minao": abs(dm_minao).max(), "max_dm0": abs(dm0).max(),
                   "max_ddm": abs(ddm).max(), "jk_s_dm_minao": s_minao, "jk_s_dm0": s_dm0,
                   "jk_s_ddm": s_ddm, "jk_s_ddm_1e-3": s_small,
                   "increment_err_j": abs(vj_minao + vj_ddm - vj_dm0).max(),
                   "increment_err_k": abs(vk_minao + vk_ddm - vk_dm0).max()}
            writer.writerow(row)
            fh.flush()
            print(f"{row['molecule']}: {mol.natm} atoms, {row['nao']} AOs; get_jk s at "
                  f"D_minao {s_minao:.2f}, D0 {s_dm0:.2f}, D0 - D_minao {s_ddm:.2f}, "
                  f"1e-3 (D0 - D_minao) {s_small:.2f} "
                  f"(max |D| {row['max_dm0']:.2f}, max |dD| {row['max_ddm']:.2f}); "
                  f"increment error J {row['increment_err_j']:.1e}, "
                  f"K {row['increment_err_k']:.1e} Ha", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
