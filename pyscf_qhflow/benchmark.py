"""Benchmark harness: SCF cost per initial guess, and Hamiltonian accuracy.

``scf``: every molecule runs from every guess on a fresh SCF object with the
same settings (:mod:`pyscf_qhflow.scfrun`); the converged density itself is
the lower limit ('converged').  Each row holds the cost of the guess apart
(``guess_fock_builds``, ``guess_s``) and in the total (``fock_builds``,
``wall_s``), the per-cycle trace (JSON), and the cost to each stopping rule of
:data:`~pyscf_qhflow.scfrun.TOLERANCES` read off that trace (``cycles_1e-9``,
``wall_s_1mev``, ...), so one run at conv_tol 1e-10 answers all three.  Rows are appended to a CSV as each molecule
finishes; a run resumes per (molecule, guess), so an interrupted run goes on
where it stopped and a new guess joins an old benchmark.

``accuracy``: predicted vs reference Fock matrices with the same overlap S:
H MAE over all nao^2 entries, occupied orbital-energy MAE, HOMO/LUMO/gap
errors, and occupied-orbital cosine similarity; the MinAO-density Fock
H_init is scored alongside as the no-model baseline.
"""
from __future__ import annotations

import csv
import inspect
import json
import os
import sys
import statistics
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import scipy.linalg
from tqdm.auto import tqdm

from .scfrun import PYSCF_GUESSES, SCREEN_EV, TOLERANCES, make_scf, run_scf, tolerance_columns
from .units import HARTREE_TO_EV, HARTREE_TO_UHA

__all__ = ["SCF_FIELDS", "bench_scf_molecule", "bench_scf", "summarize_scf",
           "summarize_scf_cost", "plot_convergence",
           "fock_metrics", "plot_scf", "bench_accuracy", "summarize_accuracy",
           "read_rows", "csv_appender"]

SCF_FIELDS = ["molecule", "natm", "nao", "guess", "cycles", "fock_builds", "wall_s",
              "e_tot", "converged", "qhflow_used", "inference_s", "qhflow_tau",
              "delta_e_vs_minao", "conv_tol", "incore", "guess_fock_builds", "guess_s", "scf_s",
              "conv_check_s",
              *[f"{key}_{name}" for name, _, _ in TOLERANCES
                for key in ("cycles", "fock_builds", "wall_s")],
              "trace"]
ENERGY_TOL = 1e-8  # Hartree


def bench_scf_molecule(name: str, mol, guesses: Iterable[str] = ("qhflow",) + PYSCF_GUESSES,
                       model=None, xc: str = "b3lyp", grid_level: int = 3,
                       conv_tol: float = 1e-10, include_converged: bool = True,
                       e_minao: float | None = None) -> list[dict]:
    """Run each guess on one molecule; minao first (its density is the 'converged' limit).

    ``guesses`` without 'minao' skip it: pass its energy as ``e_minao`` (Hartree,
    from an earlier run) for the ``delta_e_vs_minao`` column, and no
    'converged' row can be made.
    """
    guesses = list(dict.fromkeys(guesses))
    if "minao" in guesses:
        guesses = ["minao"] + [g for g in guesses if g != "minao"]
    rows, dm_converged = [], None
    for guess in guesses:
        mf = make_scf(mol, xc, grid_level, conv_tol)
        if guess == "qhflow":
            mf.qhflow_model = model
        row = run_scf(mf, guess)
        if guess == "minao":
            e_minao = row["e_tot"]
            if mf.converged:
                dm_converged = mf.make_rdm1()
        rows.append(row)
    if include_converged and dm_converged is not None:
        mf = make_scf(mol, xc, grid_level, conv_tol)
        row = run_scf(mf, dm_converged)
        row["guess"] = "converged"
        rows.append(row)
    for row in rows:
        row.update(tolerance_columns(row))
        row.update(molecule=name, natm=mol.natm, nao=mol.nao,
                   delta_e_vs_minao=None if e_minao is None else row["e_tot"] - e_minao,
                   trace=json.dumps(row["trace"], separators=(",", ":")))
    return rows


def read_rows(csv_path: str | Path) -> list[dict]:
    """The rows of a resumable benchmark CSV; none when it is missing or empty."""
    csv_path = Path(csv_path)
    if not csv_path.exists():
        return []
    with csv_path.open() as f:
        return list(csv.DictReader(f))


@contextmanager
def csv_appender(csv_path: str | Path, fields: Sequence[str]) -> Iterator[tuple]:
    """``(file, DictWriter)`` appending rows to a resumable benchmark CSV.

    A missing or empty file (a run stopped before its first row) gets the
    header, flushed at once; an existing file keeps its own columns, so the
    rows of an older run stay aligned. Flush after each row to lose nothing.
    """
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not csv_path.exists() or csv_path.stat().st_size == 0
    if not new_file:
        with csv_path.open() as f:
            fields = next(csv.reader(f))
    with csv_path.open("w" if new_file else "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        if new_file:
            writer.writeheader()
            f.flush()
        yield f, writer


def _done_molecules(csv_path: Path) -> set[str]:
    """Molecules already in a CSV (the accuracy benchmark resumes per molecule)."""
    return {row["molecule"] for row in read_rows(csv_path)}


def _done_runs(csv_path: Path) -> tuple[set[tuple[str, str]], dict[str, float]]:
    """(molecule, guess) pairs already in the CSV, and each molecule's minao energy."""
    rows = read_rows(csv_path)
    return ({(r["molecule"], r["guess"]) for r in rows},
            {r["molecule"]: float(r["e_tot"]) for r in rows if r["guess"] == "minao"})


_WORKER_MODEL = None  # a pool worker's own copy of the model, set once by _init_worker


def _init_worker(model, threads: int) -> None:
    global _WORKER_MODEL
    _WORKER_MODEL = model
    from pyscf import lib
    lib.num_threads(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _bench_worker(args):
    name, mol, guesses, model, kwargs = args
    return bench_scf_molecule(name, mol, guesses, _WORKER_MODEL if model is None else model,
                              **kwargs)


def bench_scf(molecules: list[tuple[str, object]], csv_path: str | Path,
              guesses: Iterable[str] = ("qhflow",) + PYSCF_GUESSES, model=None,
              jobs: int = 1, progress: bool = True, include_converged: bool = True,
              with_minao: bool = True, on_molecule=None, **kwargs) -> list[dict]:
    """Benchmark every (name, mol) from minao and ``guesses``; append rows to ``csv_path``.

    Resumable per (molecule, guess): runs already in the CSV are skipped, so a
    new guess can be added to an old benchmark without re-running the others.
    The 'converged' limit is made together with the minao run only;
    ``with_minao=False`` runs ``guesses`` alone (no limit, no
    ``delta_e_vs_minao`` unless the CSV has minao already).  ``jobs > 1``:
    worker processes with one copy of the model each and ``cpus // jobs``
    threads.  ``on_molecule(rows)`` is called as each molecule finishes.
    """
    csv_path = Path(csv_path)
    done, e_minao = _done_runs(csv_path)
    wanted = list(dict.fromkeys(["minao", *guesses] if with_minao else guesses))
    tasks = []
    for name, mol in molecules:
        todo = [g for g in wanted if (name, g) not in done]
        # the 'converged' limit restarts from the density of this run's minao SCF
        limit = include_converged and "minao" in todo
        if todo:
            tasks.append((name, mol, tuple(todo), model if jobs <= 1 else None,
                          {**kwargs, "include_converged": limit,
                           "e_minao": e_minao.get(name)}))
    with csv_appender(csv_path, SCF_FIELDS) as (f, writer):
        bar = tqdm(total=len(tasks), desc="scf", unit="molecule", disable=not progress)

        def save(rows: list[dict]) -> None:
            writer.writerows(rows)
            f.flush()  # an interrupted run keeps every finished molecule
            bar.update()
            if on_molecule is not None:
                on_molecule(rows)

        if jobs > 1:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            with ProcessPoolExecutor(jobs, initializer=_init_worker,
                                     initargs=(model, threads)) as pool:
                for rows in pool.map(_bench_worker, tasks):
                    save(rows)
        else:
            for task in tasks:
                save(_bench_worker(task))
        bar.close()
    return read_rows(csv_path)


def summarize_scf(rows: list[dict]) -> str:
    """Markdown table: per guess, mean/median cycles, ratios to minao, failures, energy check."""
    by_mol: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_mol.setdefault(r["molecule"], {})[r["guess"]] = r
    guesses = list(dict.fromkeys(r["guess"] for r in rows))
    lines = ["| guess | molecules | mean cycles | cycles / minao (mean) | cycles / minao "
             "(median) | wall / minao (mean) | wall / minao (median) | failures | "
             "energy off > 1e-8 Ha |",
             "|---|---|---|---|---|---|---|---|---|"]
    for g in guesses:
        cyc, rc, rw, fail, off = [], [], [], 0, 0
        for mol_rows in by_mol.values():
            if g not in mol_rows or "minao" not in mol_rows:
                continue
            r, m = mol_rows[g], mol_rows["minao"]
            if str(r["converged"]) != "True":
                fail += 1
                continue
            if abs(float(r["e_tot"]) - float(m["e_tot"])) > ENERGY_TOL:
                off += 1
            cyc.append(int(r["cycles"]))
            rc.append(int(r["cycles"]) / max(int(m["cycles"]), 1))
            rw.append(float(r["wall_s"]) / float(m["wall_s"]))
        if not cyc:
            continue
        lines.append(f"| {g} | {len(cyc)} | {statistics.mean(cyc):.1f} | "
                     f"{statistics.mean(rc):.1%} | {statistics.median(rc):.1%} | "
                     f"{statistics.mean(rw):.1%} | {statistics.median(rw):.1%} | "
                     f"{fail} | {off} |")
    return "\n".join(lines)


def _number(value) -> float | None:
    return None if value in (None, "", "None") else float(value)


def summarize_scf_cost(rows: list[dict]) -> str:
    """Markdown table: per stopping rule and guess, Fock builds and wall time against minao.

    Fock builds include the guess's own (H_init for 'qhflow'); wall time
    includes the guess, not the one-off imports and model load.  Only
    molecules where both runs reached the rule count; rows of CSVs written
    before the trace columns are left out.
    """
    by_mol: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_mol.setdefault(r["molecule"], {})[r["guess"]] = r
    guesses = [g for g in dict.fromkeys(r["guess"] for r in rows) if g != "minao"]
    lines = ["| stop at | guess | molecules | Fock builds (mean) | minao's | builds / minao "
             "(mean) | wall / minao (mean) | wall / minao (median) | guess s (mean) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, _, _ in TOLERANCES:
        for g in ["minao", *guesses]:
            builds, builds_m, rb, rw, gs = [], [], [], [], []
            for mol_rows in by_mol.values():
                if g not in mol_rows or "minao" not in mol_rows:
                    continue
                r, m = mol_rows[g], mol_rows["minao"]
                b, bm = _number(r.get(f"fock_builds_{name}")), _number(m.get(f"fock_builds_{name}"))
                w, wm = _number(r.get(f"wall_s_{name}")), _number(m.get(f"wall_s_{name}"))
                if None in (b, bm, w, wm):
                    continue
                builds.append(b)
                builds_m.append(bm)
                rb.append(b / bm)
                rw.append(w / wm)
                gs.append(_number(r.get("guess_s")) or 0.0)
            if builds:
                lines.append(f"| {name} | {g} | {len(builds)} | {statistics.mean(builds):.1f} | "
                             f"{statistics.mean(builds_m):.1f} | {statistics.mean(rb):.1%} | "
                             f"{statistics.mean(rw):.1%} | {statistics.median(rw):.1%} | "
                             f"{statistics.mean(gs):.2f} |")
    return "\n".join(lines)


def plot_convergence(rows: list[dict], out_dir: str | Path) -> Path | None:
    """|E - E_final| (Hartree) and the orbital-gradient norm against Fock builds, per guess.

    One line per (molecule, guess) from the rows' traces; the Fock builds on
    the x axis include the guess's own.  None when no row has a trace.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    traced = [r for r in rows if r.get("trace") not in (None, "")]
    if not traced:
        return None
    guesses = list(dict.fromkeys(r["guess"] for r in traced))
    colors = {g: f"C{i}" for i, g in enumerate(guesses)}
    fig, (ax_e, ax_g) = plt.subplots(1, 2, figsize=(11, 4))
    for r in traced:
        trace = json.loads(r["trace"]) if isinstance(r["trace"], str) else r["trace"]
        e_final = float(r["e_tot"])
        x = [p["fock_builds"] for p in trace]
        ax_e.semilogy(x, [max(abs(p["e_tot"] - e_final), 1e-13) for p in trace],
                      color=colors[r["guess"]], alpha=0.35, lw=0.8)
        pts = [(p["fock_builds"], p["norm_gorb"]) for p in trace if p["norm_gorb"] is not None]
        if pts:
            ax_g.semilogy(*zip(*pts), color=colors[r["guess"]], alpha=0.35, lw=0.8)
    for g in guesses:
        ax_e.plot([], [], color=colors[g], label=g)
    ax_e.axhline(SCREEN_EV / HARTREE_TO_EV, color="k", lw=0.8, ls="--", label="1 meV")
    ax_e.set_xlabel("Fock builds (guess's own included)")
    ax_e.set_ylabel("|E - E_converged| (Hartree)")
    ax_e.legend(fontsize=8)
    ax_g.set_xlabel("Fock builds (guess's own included)")
    ax_g.set_ylabel("orbital-gradient norm")
    ax_g.axhline(np.sqrt(1e-9), color="k", lw=0.8, ls="--")
    fig.suptitle(f"SCF convergence per guess ({len({r['molecule'] for r in traced})} molecules)")
    fig.tight_layout()
    path = Path(out_dir) / "scf_convergence.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_scf(rows: list[dict], out_dir: str | Path) -> list[Path]:
    """Cycles per guess (box plot) and cycles ratio to minao vs molecule size."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plots need matplotlib: pip install 'pyscf-qhflow[bench]'") from err
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    guesses = list(dict.fromkeys(r["guess"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.boxplot([[int(r["cycles"]) for r in rows if r["guess"] == g] for g in guesses],
               tick_labels=guesses)
    ax.set_ylabel("SCF cycles")
    ax.set_title("SCF cycles per initial guess")
    p1 = out_dir / "scf_cycles.png"
    fig.tight_layout()
    fig.savefig(p1, dpi=120)
    plt.close(fig)
    minao = {r["molecule"]: int(r["cycles"]) for r in rows if r["guess"] == "minao"}
    fig, ax = plt.subplots(figsize=(7, 4))
    for g in guesses:
        if g == "minao":
            continue
        pts = [(int(r["natm"]), int(r["cycles"]) / max(minao[r["molecule"]], 1))
               for r in rows if r["guess"] == g and r["molecule"] in minao]
        if pts:
            ax.scatter(*zip(*pts), label=g, s=12)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("atoms")
    ax.set_ylabel("cycles / minao cycles")
    ax.legend()
    p2 = out_dir / "scf_ratio_vs_size.png"
    fig.tight_layout()
    fig.savefig(p2, dpi=120)
    plt.close(fig)
    p3 = plot_convergence(rows, out_dir)
    return [p1, p2] + ([p3] if p3 else [])


def fock_metrics(fock_pred: np.ndarray, fock_ref: np.ndarray, overlap: np.ndarray,
                 nocc: int) -> dict:
    """Accuracy of a predicted Fock matrix against the reference (same S; Hartree).

    Returns H MAE (micro-Hartree, all nao^2 entries), occupied orbital-energy
    MAE, HOMO/LUMO/gap absolute errors (milli-Hartree), the mean |<c_i|S|c_i'>|
    of the occupied orbitals, and the error of the aufbau density the guess
    would start from, ``sqrt(Tr[(D - D*) S (D - D*) S])`` (the Frobenius norm in
    an orthonormal AO basis; D = 2 C_occ C_occ^T, electrons).
    """
    e_p, c_p = scipy.linalg.eigh(fock_pred, overlap)
    e_r, c_r = scipy.linalg.eigh(fock_ref, overlap)
    occ_sim = np.abs(np.einsum("pi,pq,qi->i", c_p[:, :nocc], overlap, c_r[:, :nocc]))
    dm_diff_s = 2.0 * (c_p[:, :nocc] @ c_p[:, :nocc].T - c_r[:, :nocc] @ c_r[:, :nocc].T) @ overlap
    homo, lumo = nocc - 1, nocc
    return {
        "h_mae_uha": float(np.abs(fock_pred - fock_ref).mean() * HARTREE_TO_UHA),
        "occ_eps_mae_mha": float(np.abs(e_p[:nocc] - e_r[:nocc]).mean() * 1e3),
        "homo_err_mha": float(abs(e_p[homo] - e_r[homo]) * 1e3),
        "lumo_err_mha": float(abs(e_p[lumo] - e_r[lumo]) * 1e3),
        "gap_err_mha": float(abs((e_p[lumo] - e_p[homo]) - (e_r[lumo] - e_r[homo])) * 1e3),
        "occ_cosine": float(occ_sim.mean()),
        "density_err": float(np.sqrt(max(np.trace(dm_diff_s @ dm_diff_s), 0.0))),
    }


ACCURACY_FIELDS = ["molecule", "natm", "nao", "source", "h_mae_uha", "occ_eps_mae_mha",
                   "homo_err_mha", "lumo_err_mha", "gap_err_mha", "occ_cosine",
                   "density_err"]


def bench_accuracy(dataset, indices, model, csv_path: str | Path,
                   progress: bool = True) -> list[dict]:
    """Score ``model`` (any predictor, or a QHFlowModel) and the H_init baseline on
    labelled molecules; resumable CSV.  Flow steps and damping are the predictor's.
    """
    from pyscf import gto

    from .guess.hook import resolve_model
    from .hinit import minao_fock
    model = resolve_model(model=model)
    csv_path = Path(csv_path)
    done = _done_molecules(csv_path)
    with csv_appender(csv_path, ACCURACY_FIELDS) as (f, writer):
        for i in tqdm(list(indices), desc="accuracy", disable=not progress):
            rec = dataset[i]
            name = f"qm9_{int(rec['qm9_index'])}"
            if name in done:
                continue
            mol = gto.M(atom=[(int(z), r) for z, r in zip(rec["Z"], rec["pos"])],
                        basis=getattr(model, "basis", "def2-svp"), unit="Angstrom", verbose=0)
            overlap = mol.intor("int1e_ovlp")
            nocc = mol.nelectron // 2
            h_init = rec["hinit"] if "hinit" in rec else minao_fock(mol)
            # the cached H_init is the model's own input; other predictors work from mol
            params = inspect.signature(model.predict_fock).parameters
            kwargs = {"hinit": h_init} if "hinit" in params else {}
            fock = model.predict_fock(mol, **kwargs)
            preds = {"qhflow": np.asarray(fock), "hinit": h_init}
            for source, fock in preds.items():
                m = fock_metrics(fock, rec["fock"], overlap, nocc)
                writer.writerow({"molecule": name, "natm": mol.natm, "nao": mol.nao,
                                 "source": source, **m})
            f.flush()
    return read_rows(csv_path)


def _present(rows: list[dict], key: str) -> list[float]:
    """``key`` of every row that has it (CSVs written before density_err lack that column)."""
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


def summarize_accuracy(rows: list[dict]) -> str:
    """Markdown table of mean metrics per source (qhflow model, H_init baseline)."""
    keys = ACCURACY_FIELDS[4:]
    lines = ["| source | molecules | H MAE (µHa) | occ. ε MAE (mHa) | HOMO err (mHa) | "
             "LUMO err (mHa) | gap err (mHa) | occ. cosine | density err (mean) | (median) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for source in dict.fromkeys(r["source"] for r in rows):
        sel = [r for r in rows if r["source"] == source]
        values = {k: _present(sel, k) for k in keys}
        means = [statistics.mean(values[k]) if values[k] else float("nan") for k in keys]
        dens = values["density_err"]
        median = statistics.median(dens) if dens else float("nan")
        lines.append(f"| {source} | {len(sel)} | {means[0]:.1f} | {means[1]:.3f} | "
                     f"{means[2]:.3f} | {means[3]:.3f} | {means[4]:.3f} | {means[5]:.5f} | "
                     f"{means[6]:.4f} | {median:.4f} |")
    return "\n".join(lines)
