"""Fast labels against pseudo-labels, end to end at equal CPU time (issue #26 item 3).

RESULTS 24 scored each target source per molecule; this script measures what
matters, the test H MAE that the same labelling CPU-seconds buy:

* (a) **fast labels**: the SCF converged from the model's guess (conv_tol 1e-8,
  conv_tol_grad 1e-4, ``qhflow label --guess qhflow``);
* (b) **pseudo-labels** F[D_k]: the Fock matrix after k SCF cycles of that same
  SCF (k = 4 by default, the smallest k that RESULTS 24 found close to F*).

One SCF per molecule gives both: the fast-label SCF passes through cycle k,
and a callback keeps F[D_k] and the seconds spent until it was built (from
the geometry: integrals, grid, H_init, the prediction, the k + 1 Fock
builds), beside the seconds of the whole label.  Both arms are charged
wall seconds of one thread per molecule, H_init included (both need it).

Steps:

1. ``label``: draw QM9 molecules of the *train* split (seeded, never in the
   given shards, never a multiple of 50) and label them as above with
   ``--jobs`` one-thread workers.  One ``OUT/labels/<name>.npz`` per molecule,
   written atomically: a killed run resumes where it stopped.
2. ``shards``: the budget is the pseudo-label seconds of all labelled
   molecules; arm (b) gets all of them, arm (a) the first
   N * (sum of pseudo-label seconds / sum of fast-label seconds) molecules in
   draw order (a ratio over the same molecules, so a machine load that varies
   during labelling cancels).  Writes
   ``OUT/arm_fast/*.h5`` and ``OUT/arm_pseudo<k>/*.h5`` (pseudo-label records
   say ``converged = False``, ``scf_cycles = k``: train with
   ``--keep-unconverged``), ``OUT/arm_all_fast/*.h5`` (every molecule's
   converged label, to train the next model on) and ``OUT/arms.json``.
3. Fine-tune the same starting weights on each arm plus the existing shards,
   with the same steps and seed (two runs side by side, one thread each)::

       for arm in fast pseudo4; do
         setsid nohup qhflow train --data ../shared/data OUT/arm_$arm --keep-unconverged \\
             --init-from START.pt --out runs/e2e_$arm --steps 1000 --warmup-steps 50 \\
             --lr 3e-4 --ema-decay 0.995 --val-every 250 --threads 1 --no-progress \\
             > runs/e2e_$arm.log 2>&1 < /dev/null &
       done

4. ``qhflow bench accuracy --split test --model runs/e2e_<arm>/best.pt`` for
   each arm (and START.pt), then ``report`` pairs their per-molecule H MAE
   (sign test) and writes ``OUT/e2e_summary.md``.

    OMP_NUM_THREADS=1 python benchmarks/label_source_e2e.py label --count 120 --jobs 2 \\
        --out benchmarks/out/e2e
    python benchmarks/label_source_e2e.py shards --out benchmarks/out/e2e
    python benchmarks/label_source_e2e.py report --out benchmarks/out/e2e \\
        --acc start=ACC_DIR fast=ACC_DIR pseudo4=ACC_DIR
"""
from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import statistics
import time
from pathlib import Path

import numpy as np

_WORKER_MODEL = None


def _label_one(spec, k: int, model: str) -> dict:
    """Fast label of one spec with F[D_k] and the seconds to each (run in a worker)."""
    from pyscf_qhflow.data.label import label_molecule
    from pyscf_qhflow.scfrun import load_predictor

    global _WORKER_MODEL
    if _WORKER_MODEL is None:  # once per worker: a model load is not a labelling cost
        _WORKER_MODEL, _ = load_predictor(model)
    kept = {}
    t0 = time.perf_counter()

    def keep_cycle_k(envs):
        # PySCF's cycle c builds the Fock matrix of the density after c + 1 updates
        if int(envs["cycle"]) + 1 == k:
            kept.update(fock=np.array(envs["fock"]), energy=float(envs["e_tot"]),
                        seconds=time.perf_counter() - t0,
                        # what a labeller could gate pseudo-labels on, free at cycle k
                        norm_gorb=float(envs["norm_gorb"]),
                        delta_e=float(envs["e_tot"] - envs["last_hf_e"]))

    try:
        out = label_molecule(spec.atoms(), guess="qhflow", model=_WORKER_MODEL,
                             callback=keep_cycle_k)
    except Exception as err:  # a bad molecule is recorded, the run goes on
        return {"name": spec.name, "error": f"{type(err).__name__}: {err}"[:500]}
    seconds = time.perf_counter() - t0
    if not kept:  # converged before cycle k: the pseudo-label is the label itself
        kept.update(fock=out["fock"], energy=out["energy"], seconds=seconds,
                    norm_gorb=0.0, delta_e=0.0)
    return {"name": spec.name, "qm9_index": spec.qm9_index, "smiles": spec.smiles,
            "Z": out["Z"], "pos": out["pos"], "hinit": out["hinit"],
            "fock": out["fock"], "energy": out["energy"], "cycles": out["cycles"],
            "converged": out["converged"], "seconds": seconds,
            "fock_k": 0.5 * (kept["fock"] + kept["fock"].T), "energy_k": kept["energy"],
            "seconds_k": kept["seconds"], "norm_gorb_k": kept["norm_gorb"],
            "delta_e_k": kept["delta_e"], "k": k}


def _worker_init() -> None:
    from pyscf_qhflow.data.label import _worker_init as label_worker_init
    label_worker_init(1, ignore_sigint=True)


def draw(count: int, seed: int, shards: str) -> list:
    """The seeded draw of train-split QM9 molecules not in ``shards``."""
    from pyscf_qhflow.data.label import molecules_from_qm9, qm9_indices_in_shards
    return molecules_from_qm9(split="train", sample=count, seed=seed,
                              exclude=qm9_indices_in_shards([shards]))


def cmd_label(args) -> int:
    from tqdm.auto import tqdm

    from pyscf_qhflow.fileio import atomic_path

    labels = Path(args.out) / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    specs = draw(args.count, args.seed, args.shards)
    (Path(args.out) / "draw.json").write_text(json.dumps(
        {"seed": args.seed, "count": args.count, "k": args.k, "model": args.model,
         "names": [s.name for s in specs]}, indent=1))
    todo = [s for s in specs if not (labels / f"{s.name}.npz").exists()
            and not (labels / f"{s.name}.failed.json").exists()]
    print(f"{len(specs) - len(todo)} of {len(specs)} molecules already labelled", flush=True)
    with concurrent.futures.ProcessPoolExecutor(args.jobs, initializer=_worker_init) as pool:
        futures = [pool.submit(_label_one, s, args.k, args.model) for s in todo]
        for fut in tqdm(concurrent.futures.as_completed(futures), total=len(futures),
                        desc="labels", disable=args.no_progress):
            res = fut.result()
            if "error" in res:
                (labels / f"{res['name']}.failed.json").write_text(json.dumps(res))
                print(f"{res['name']}: {res['error']}", flush=True)
                continue
            with atomic_path(labels / f"{res['name']}.npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **{key: np.asarray(v) for key, v in res.items()})
            if args.no_progress:
                print(f"{res['name']}: {res['cycles']} cycles {res['seconds']:.1f} s, "
                      f"F[D_{args.k}] {res['seconds_k']:.1f} s", flush=True)
    return 0


def _load_labels(out: Path) -> list[dict]:
    names = json.loads((out / "draw.json").read_text())["names"]
    rows = []
    for name in names:  # draw order
        path = out / "labels" / f"{name}.npz"
        if path.exists():
            with np.load(path) as z:
                rows.append({key: z[key] for key in z.files})
    return rows


def cmd_shards(args) -> int:
    from pyscf_qhflow.data.label import FAST_CONV_TOL, shard_attrs, write_shard

    out = Path(args.out)
    rows = _load_labels(out)
    if not rows:
        raise SystemExit(f"no labels under {out / 'labels'}: run the label step first")
    k = int(rows[0]["k"])
    budget = float(sum(r["seconds_k"] for r in rows))
    # Arm (a) gets the first molecules in draw order, as many as the budget buys
    # at the ratio of summed costs over *all* labelled molecules.  Filling the
    # budget with the first molecules' own seconds would not be fair: the two
    # timings of a molecule come from one SCF and share its machine load, but
    # the load varies along the run (session 29: the first 30 molecules shared
    # the cores with a training run and took 67 s, the rest 41 s).
    cost_ratio = budget / float(sum(r["seconds"] for r in rows))
    fast = rows[:int(len(rows) * cost_ratio)]
    spent = float(sum(r["seconds"] for r in fast))
    attrs = shard_attrs(conv_tol=FAST_CONV_TOL[0], conv_tol_grad=FAST_CONV_TOL[1],
                        guess="qhflow", source="benchmarks/label_source_e2e.py")

    def record(r, pseudo: bool) -> dict:
        base = {"Z": r["Z"], "pos": r["pos"], "hinit": r["hinit"],
                "qm9_index": int(r["qm9_index"]), "smiles": str(r["smiles"]),
                "scf_init_guess": "qhflow", "scf_conv_tol": FAST_CONV_TOL[0]}
        if pseudo:
            return {**base, "fock": r["fock_k"], "energy": float(r["energy_k"]),
                    "cycles": k, "converged": False}
        return {**base, "fock": r["fock"], "energy": float(r["energy"]),
                "cycles": int(r["cycles"]), "converged": bool(r["converged"])}

    # all_fast: every molecule's converged label, for the next shipped model
    # (the SCFs ran to convergence anyway; only the comparison leaves some out)
    for arm, chosen, pseudo in (("fast", fast, False), (f"pseudo{k}", rows, True),
                                ("all_fast", rows, False)):
        arm_dir = out / f"arm_{arm}"
        arm_dir.mkdir(exist_ok=True)
        for old in arm_dir.glob("*.h5"):
            old.unlink()
        for start in range(0, len(chosen), 50):
            write_shard(arm_dir / f"qm9_b3lyp_def2svp_{arm}_{start // 50:03d}.h5",
                        [record(r, pseudo) for r in chosen[start:start + 50]], attrs)
    pseudo_err = [float(np.abs(r["fock_k"] - r["fock"]).mean() * 1e6) for r in rows]
    summary = {
        "k": k, "labelled": len(rows), "budget_s": budget,
        "fast": {"molecules": len(fast), "seconds": spent,
                 "mean_s": statistics.mean(float(r["seconds"]) for r in fast)},
        f"pseudo{k}": {"molecules": len(rows), "seconds": budget,
                       "mean_s": budget / len(rows),
                       "mae_vs_fast_label_uha": statistics.mean(pseudo_err),
                       "max_mae_vs_fast_label_uha": max(pseudo_err)},
        "cost_ratio_pseudo_over_fast": cost_ratio,
        "cost_ratio_per_molecule_mean": statistics.mean(
            float(r["seconds_k"]) / float(r["seconds"]) for r in rows),
    }
    (out / "arms.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


def _h_mae(acc_dir: str) -> dict[str, float]:
    with open(Path(acc_dir) / "accuracy.csv", newline="") as fh:
        return {r["molecule"]: float(r["h_mae_uha"]) for r in csv.DictReader(fh)
                if r["source"] == "qhflow"}


def cmd_report(args) -> int:
    from scipy.stats import binomtest

    out = Path(args.out)
    runs = dict(item.split("=", 1) for item in args.acc)
    maes = {label: _h_mae(d) for label, d in runs.items()}
    common = sorted(set.intersection(*(set(m) for m in maes.values())))
    arms = json.loads((out / "arms.json").read_text()) if (out / "arms.json").exists() else {}
    lines = [f"Test H MAE on the {len(common)} test molecules every run was scored on "
             "(µHa):", "", "| run | molecules added | mean H MAE | median |", "|---|---|---|---|"]
    for label, m in maes.items():
        added = arms.get(label, {}).get("molecules", "")
        vals = [m[name] for name in common]
        lines.append(f"| {label} | {added} | {statistics.mean(vals):.1f} | "
                     f"{statistics.median(vals):.1f} |")
    labels = list(maes)
    lines += ["", "| pair | lower on | higher on | sign test p |", "|---|---|---|---|"]
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            lower = sum(maes[a][n] < maes[b][n] for n in common)
            higher = sum(maes[a][n] > maes[b][n] for n in common)
            p = binomtest(lower, lower + higher).pvalue if lower + higher else 1.0
            lines.append(f"| {a} vs {b} | {lower} | {higher} | {p:.3g} |")
    text = "\n".join(lines) + "\n"
    (out / "e2e_summary.md").write_text(text)
    print(text)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="step", required=True)
    lab = sub.add_parser("label", help="label a seeded draw of train-split QM9 molecules")
    lab.add_argument("--count", type=int, default=120)
    lab.add_argument("--seed", type=int, default=26)
    lab.add_argument("--k", type=int, default=4, help="SCF cycles of the pseudo-labels")
    lab.add_argument("--jobs", type=int, default=2, help="one-thread labelling workers")
    lab.add_argument("--model", default="default", help="model of the guess")
    lab.add_argument("--shards", default="../shared/data", help="molecules never to draw")
    lab.add_argument("--no-progress", action="store_true")
    sh = sub.add_parser("shards", help="match the budget and write the two arms' shards")
    rep = sub.add_parser("report", help="pair the arms' test H MAE")
    rep.add_argument("--acc", nargs="+", required=True, metavar="LABEL=DIR",
                     help="qhflow bench accuracy output directories")
    for s in (lab, sh, rep):
        s.add_argument("--out", default="benchmarks/out/e2e")
    args = p.parse_args()
    return {"label": cmd_label, "shards": cmd_shards, "report": cmd_report}[args.step](args)


if __name__ == "__main__":
    raise SystemExit(main())
