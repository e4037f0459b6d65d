"""One-shot ML-DFT speed against the SCF it replaces, by molecule size.

For each molecule, each on a fresh PySCF object (its own grid and integrals),
the model loaded and warmed up once beforehand:

1. one-shot energy (``oneshot(mf, forces=False)``): H_init, the network, one
   Fock build at the predicted density;
2. one-shot energy + forces (``oneshot(mf)``: density-fitted J/K derivatives
   and a level-2 XC grid in the gradient, the defaults; ``--exact-gradient-too``
   adds exact J/K derivatives, ``--gradient-grid-check`` the gradient on the
   SCF's own grid, each with its largest force difference);
3. SCF from MinAO at ``--conv-tol`` (PySCF's default 1e-9), then PySCF's
   analytic gradient on the converged SCF;
4. SCF from the qhflow guess (skipped with ``--no-qhflow-scf``).

Wall times, Fock builds (``scfrun.count_fock_builds``: H_init's and conv_check's included) and the
one-shot errors against the SCF (energy in meV, force MAE in meV/Angstrom)
go to OUT/speed.csv, one row per molecule, flushed as each finishes; a rerun
skips molecules already there. Prints a markdown table; writes
OUT/speed_vs_atoms.png.

    OMP_NUM_THREADS=1 python benchmarks/bench_oneshot_speed.py --shards ../shared/data \\
        --limit 10 --xyz examples/ethanol.xyz benchmarks/molecules/druglike/*.xyz \\
        --out benchmarks/out/oneshot_speed
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from pyscf import gto

from pyscf_qhflow.benchmark import csv_appender, read_rows
from pyscf_qhflow.checkpoint import load_model
from pyscf_qhflow.oneshot import oneshot
from pyscf_qhflow.scfrun import count_fock_builds, load_molecule, make_scf, run_scf
from pyscf_qhflow.units import BOHR_TO_ANGSTROM, HARTREE_TO_MEV

FORCE_MEV_A = HARTREE_TO_MEV / BOHR_TO_ANGSTROM  # Hartree/Bohr -> meV/Angstrom
FIELDS = ["molecule", "natm", "nao", "t_oneshot_energy", "builds_oneshot_energy",
          "t_oneshot_forces", "t_oneshot_gradient", "t_oneshot_forces_exact",
          "t_scf_minao", "cycles_minao", "builds_minao", "t_gradient_scf",
          "t_scf_qhflow", "cycles_qhflow", "builds_qhflow",
          "de_oneshot_mev", "force_mae_mev_a", "force_df_vs_exact_max_mev_a",
          "t_oneshot_forces_scf_grid", "force_grid_vs_scf_grid_max_mev_a"]


def timed_oneshot(mol, model, grid_level: int, **kwargs):
    # H_init is built on a protocol object of its own: count the molecule's builds
    with count_fock_builds(mol) as builds:
        mf = make_scf(mol, grid_level=grid_level)
        t0 = time.perf_counter()
        res = oneshot(mf, model=model, **kwargs)
        wall = time.perf_counter() - t0
    return res, wall, builds["n"]


def timed_scf(mol, guess: str, model, grid_level: int, conv_tol: float):
    mf = make_scf(mol, grid_level=grid_level, conv_tol=conv_tol)
    mf.qhflow_model = model
    scf = run_scf(mf, guess)  # its Fock builds include H_init's and conv_check's
    if not scf["converged"]:
        raise RuntimeError(f"{mol}: the SCF from {guess} did not converge")
    return mf, scf, scf["fock_builds"]


def bench_molecule(name: str, mol, model, grid_level: int, conv_tol: float,
                   qhflow_scf: bool, exact_gradient: bool, grid_check: bool = False) -> dict:
    row = {"molecule": name, "natm": mol.natm, "nao": mol.nao}
    energy_only, row["t_oneshot_energy"], row["builds_oneshot_energy"] = timed_oneshot(
        mol, model, grid_level, forces=False)
    with_forces, row["t_oneshot_forces"], _ = timed_oneshot(mol, model, grid_level)
    row["t_oneshot_gradient"] = with_forces.timings["gradient"]
    if exact_gradient:
        exact, row["t_oneshot_forces_exact"], _ = timed_oneshot(mol, model, grid_level,
                                                                 gradient_jk="exact")
        row["force_df_vs_exact_max_mev_a"] = float(
            np.abs(with_forces.grad - exact.grad).max() * FORCE_MEV_A)
    if grid_check:  # the default coarse gradient grid against the SCF's own grid
        fine, row["t_oneshot_forces_scf_grid"], _ = timed_oneshot(
            mol, model, grid_level, gradient_grid_level=None)
        row["force_grid_vs_scf_grid_max_mev_a"] = float(
            np.abs(with_forces.grad - fine.grad).max() * FORCE_MEV_A)

    mf, scf, row["builds_minao"] = timed_scf(mol, "minao", model, grid_level, conv_tol)
    row.update(t_scf_minao=scf["wall_s"], cycles_minao=scf["cycles"])
    t0 = time.perf_counter()
    g_scf = mf.nuc_grad_method().kernel()
    row["t_gradient_scf"] = time.perf_counter() - t0
    row["de_oneshot_mev"] = (energy_only.e_tot - scf["e_tot"]) * HARTREE_TO_MEV
    row["force_mae_mev_a"] = float(np.abs(with_forces.grad - g_scf).mean() * FORCE_MEV_A)

    if qhflow_scf:
        _, scf, row["builds_qhflow"] = timed_scf(mol, "qhflow", model, grid_level, conv_tol)
        row.update(t_scf_qhflow=scf["wall_s"], cycles_qhflow=scf["cycles"])
    return row


def profile_gradient(mol, model, grid_level: int) -> str:
    """Where the one-shot gradient's time goes: J/K derivatives against the XC part.

    cProfile of the gradient kernel (PySCF's RKS gradient, which the one-shot
    gradient is) with exact and with density-fitted J/K derivatives, beside
    PySCF's own gradient after a converged SCF of the same molecule.
    """
    import cProfile
    import pstats

    from pyscf_qhflow.oneshot import gradient_method

    def split(stats: pstats.Stats, total: float) -> tuple[float, float]:
        jk = xc = 0.0
        for (filename, _, func), (_, _, _, cumulative, _) in stats.stats.items():
            if "pyscf/grad/" in filename or "pyscf/df/grad/" in filename:
                if func == "get_vxc":
                    xc = max(xc, cumulative)
                elif func in ("get_jk", "get_j", "get_k"):
                    jk = max(jk, cumulative)
        return jk, xc

    res = oneshot(make_scf(mol, grid_level=grid_level), model=model, forces=False)
    lines = ["| gradient | total (s) | J/K derivatives (s) | XC (s) |", "|---|---|---|---|"]
    for label, jk_mode, mo in [("one-shot, exact J/K", "exact", res),
                               ("one-shot, density-fitted J/K (default)", "df", res),
                               ("PySCF after the SCF (exact J/K)", "exact", None)]:
        mf = make_scf(mol, grid_level=grid_level)
        if mo is None:
            mf.kernel()
            args = (mf.mo_energy, mf.mo_coeff, mf.mo_occ)
        else:
            mf.build()
            mf.grids.build()  # the one-shot has its grid already (built for H_init)
            args = (mo.mo_energy, mo.mo_coeff, mo.mo_occ)
        grad = gradient_method(mf, jk_mode)
        profiler = cProfile.Profile()
        t0 = time.perf_counter()
        profiler.runcall(grad.kernel, *args)
        total = time.perf_counter() - t0
        jk, xc = split(pstats.Stats(profiler), total)
        lines.append(f"| {label} | {total:.2f} | {jk:.2f} | {xc:.2f} |")
    return "\n".join(lines)


def _molecules(args) -> list[tuple[str, gto.Mole]]:
    mols = []
    if args.shards:
        from pyscf_qhflow.data.dataset import ShardDataset
        from pyscf_qhflow.data.shardfile import build_mol, find_shards
        from pyscf_qhflow.data.splits import split_indices
        ds = ShardDataset(find_shards(args.shards))
        for i in split_indices(ds, args.split)[:args.limit]:
            rec = ds[i]
            mols.append((f"qm9_{int(rec['qm9_index'])}", build_mol(rec["Z"], rec["pos"], ds.basis)))
    for path in args.xyz:
        mols.append((Path(path).stem, load_molecule(path)))
    return mols


def _f(row: dict, key: str) -> float:
    return float(row[key])


def summarize(rows: list[dict]) -> str:
    lines = ["| molecule | atoms | AOs | one-shot E (s) | SCF MinAO (s, cycles) | E: % of SCF | "
             "one-shot E+F (s) | SCF + gradient (s) | E+F: % of SCF+grad | SCF qhflow (s) | "
             "E err (meV) | F MAE (meV/Å) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    energy_ratio, force_ratio = [], []
    for r in sorted(rows, key=lambda r: int(r["natm"])):
        e_ratio = _f(r, "t_oneshot_energy") / _f(r, "t_scf_minao")
        scf_grad = _f(r, "t_scf_minao") + _f(r, "t_gradient_scf")
        f_ratio = _f(r, "t_oneshot_forces") / scf_grad
        energy_ratio.append(e_ratio)
        force_ratio.append(f_ratio)
        qh = (f"{_f(r, 't_scf_qhflow'):.1f} ({r['cycles_qhflow']})"
              if r.get("t_scf_qhflow") not in (None, "") else "-")
        lines.append(
            f"| {r['molecule']} | {r['natm']} | {r['nao']} | {_f(r, 't_oneshot_energy'):.2f} | "
            f"{_f(r, 't_scf_minao'):.2f} ({r['cycles_minao']}) | {100 * e_ratio:.0f}% | "
            f"{_f(r, 't_oneshot_forces'):.2f} | {scf_grad:.2f} | {100 * f_ratio:.0f}% | {qh} | "
            f"{_f(r, 'de_oneshot_mev'):+.1f} | {_f(r, 'force_mae_mev_a'):.1f} |")
    checked = [r for r in rows if r.get("force_grid_vs_scf_grid_max_mev_a") not in (None, "")]
    notes = [f"{r['molecule']}: E+F {_f(r, 't_oneshot_forces'):.2f} s with the level-2 "
             f"gradient grid, {_f(r, 't_oneshot_forces_scf_grid'):.2f} s on the SCF's; "
             f"forces differ by at most {_f(r, 'force_grid_vs_scf_grid_max_mev_a'):.2f} meV/Å"
             for r in checked]
    if rows:
        lines.append(f"| **mean of ratios** ({len(rows)}) | | | | | "
                     f"**{100 * statistics.mean(energy_ratio):.0f}%** | | | "
                     f"**{100 * statistics.mean(force_ratio):.0f}%** | | | |")
    return "\n".join(lines + ([""] + notes if notes else []))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = sorted(rows, key=lambda r: int(r["natm"]))
    atoms = [int(r["natm"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, marker in [("t_oneshot_energy", "one-shot energy", "o"),
                               ("t_oneshot_forces", "one-shot energy + forces", "s"),
                               ("t_scf_minao", "SCF from MinAO", "^"),
                               ("t_scf_qhflow", "SCF from qhflow", "v")]:
        pts = [(a, float(r[key])) for a, r in zip(atoms, rows) if r.get(key) not in (None, "")]
        if pts:
            ax.plot(*zip(*pts), marker=marker, linestyle="none", label=label)
    pts = [(a, _f(r, "t_scf_minao") + _f(r, "t_gradient_scf")) for a, r in zip(atoms, rows)]
    ax.plot(*zip(*pts), marker="x", linestyle="none", label="SCF (MinAO) + gradient")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("atoms")
    ax.set_ylabel("wall time (s, one thread)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", nargs="*", default=[], help="shard files or directories")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--limit", type=int, default=10, help="molecules of the split")
    p.add_argument("--xyz", nargs="*", default=[], help="more molecules (.xyz, Angstrom)")
    p.add_argument("--model", default="default")
    p.add_argument("--grid-level", type=int, default=3)
    p.add_argument("--conv-tol", type=float, default=1e-9, help="SCF tolerance (PySCF default)")
    p.add_argument("--no-qhflow-scf", action="store_true", help="skip the SCF from qhflow")
    p.add_argument("--exact-gradient-too", action="store_true",
                   help="also time the one-shot gradient with exact J/K derivatives")
    p.add_argument("--gradient-grid-check", action="store_true",
                   help="also time the one-shot gradient on the SCF's own XC grid")
    p.add_argument("--summarize", action="store_true", help="only print the table of OUT")
    p.add_argument("--profile-gradient", metavar="XYZ", default=None,
                   help="only profile the gradient of this molecule (J/K against XC)")
    p.add_argument("--out", default="benchmarks/out/oneshot_speed")
    args = p.parse_args(argv)
    out = Path(args.out)
    csv_path = out / "speed.csv"
    if args.profile_gradient:
        print(profile_gradient(load_molecule(args.profile_gradient), load_model(args.model),
                               args.grid_level))
        return 0
    if not args.summarize:
        model = load_model(args.model)
        water = gto.M(atom="O 0 0 0.12; H 0 0.76 -0.47; H 0 -0.76 -0.47", basis="def2-svp",
                      verbose=0)
        oneshot(make_scf(water), model=model)  # warm-up: the first network call pays torch's setup
        done = {r["molecule"] for r in read_rows(csv_path)}
        with csv_appender(csv_path, FIELDS) as (f, writer):
            for name, mol in _molecules(args):
                if name in done:
                    continue
                row = bench_molecule(name, mol, model, args.grid_level, args.conv_tol,
                                     not args.no_qhflow_scf, args.exact_gradient_too,
                                     args.gradient_grid_check)
                writer.writerow(row)
                f.flush()
                print(f"{name}: {mol.natm} atoms, one-shot E {row['t_oneshot_energy']:.2f} s, "
                      f"SCF {row['t_scf_minao']:.2f} s", flush=True)
    rows = read_rows(csv_path)
    print(summarize(rows))
    if rows:
        plot(rows, out / "speed_vs_atoms.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
