"""SCF cycles of the qhflow guess vs MinAO outside the training setting.

The model is trained for B3LYP/def2-SVP on neutral closed-shell molecules.
This runs ``qhflow bench scf`` (guesses qhflow and minao, no converged-density
row) on held-out test molecules for

* other basis sets (the prediction is made in def2-SVP and projected),
* other functionals and HF (same predicted density, the user's functional),
* cations and anions (doublets, UKS; the closed-shell prediction is filled
  with the molecule's own alpha/beta occupations),

(B3LYP/def2-SVP itself is ``qhflow bench scf`` without extra options) and
writes one markdown table: cycles ratio to MinAO per setting, failures,
and energies that differ from MinAO's by more than 1e-7 Ha.

    python benchmarks/bench_transfer.py --shards ../shared/data --limit 3 \\
        --out benchmarks/out/transfer

Each setting has its own resumable output directory under ``--out``.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

from pyscf_qhflow.cli.main import main as qhflow

ENERGY_TOL = 1e-7  # Hartree, the bound for "same energy"

SETTINGS = {  # name -> extra `qhflow bench scf` arguments; the targets first
    "HF": ["--xc", "hf"],
    "PBE0": ["--xc", "pbe0"],
    "cation (+1, doublet, UKS)": ["--charge", "1"],
    "anion (-1, doublet, UKS)": ["--charge", "-1"],
    "basis def2-TZVP": ["--basis", "def2-tzvp"],
    "PBE": ["--xc", "pbe"],
    # libxc's wB97X-D exchange-correlation; the D2 dispersion term (PySCF needs an
    # extra package for it) adds an energy only and does not change the density
    "wB97X-D (no dispersion term)": ["--xc", "hyb_gga_xc_wb97x_d"],
    "r2SCAN": ["--xc", "r2scan"],
    "basis 6-31G(d)": ["--basis", "6-31g*"],
    "basis cc-pVDZ": ["--basis", "cc-pvdz"],
    "basis def2-SVPD": ["--basis", "def2-svpd"],
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def summarize(rows: list[dict]) -> dict:
    by_mol: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_mol.setdefault(r["molecule"], {})[r["guess"]] = r
    ratios, walls, q_cyc, m_cyc, fail_q, fail_m, off = [], [], [], [], 0, 0, 0
    for guesses in by_mol.values():
        m, q = guesses.get("minao"), guesses.get("qhflow")
        if m is None or q is None:
            continue
        ok_m, ok_q = m["converged"] == "True", q["converged"] == "True"
        fail_m += not ok_m
        fail_q += not ok_q
        if ok_m and ok_q:
            off += abs(float(q["delta_e_vs_minao"])) > ENERGY_TOL
            q_cyc.append(int(q["cycles"]))
            m_cyc.append(int(m["cycles"]))
            ratios.append(int(q["cycles"]) / max(int(m["cycles"]), 1))
            # wall time to convergence, the qhflow one including H_init and inference
            walls.append(float(q["wall_s"]) / float(m["wall_s"]))
    return {"n": len(ratios), "minao": statistics.mean(m_cyc) if m_cyc else float("nan"),
            "qhflow": statistics.mean(q_cyc) if q_cyc else float("nan"),
            "ratio": statistics.mean(ratios) if ratios else float("nan"),
            "median": statistics.median(ratios) if ratios else float("nan"),
            "wall": statistics.mean(walls) if walls else float("nan"),
            "fail_q": fail_q, "fail_m": fail_m, "off": off}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", required=True, nargs="+")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=3)
    p.add_argument("--model", default="default")
    p.add_argument("--num-steps", type=int, default=None)
    p.add_argument("--settings", nargs="+", default=None,
                   help="subset of the settings, by the slug of their name")
    p.add_argument("--out", default="benchmarks/out/transfer")
    args = p.parse_args(argv)
    chosen = {k: v for k, v in SETTINGS.items()
              if args.settings is None or slug(k) in args.settings}
    lines = ["| setting | molecules | minao cycles | qhflow cycles | qhflow / minao (mean) "
             "| (median) | wall / minao (mean) | qhflow failures | minao failures "
             "| energy off > 1e-7 Ha |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, extra in chosen.items():
        out = Path(args.out) / slug(name)
        cmd = ["bench", "scf", "--shards", *args.shards, "--split", args.split,
               "--limit", str(args.limit), "--model", args.model, "--guesses", "qhflow",
               "minao", "--no-limit", "--no-plots", "--out", str(out), *extra]
        if args.num_steps is not None:
            cmd += ["--num-steps", str(args.num_steps)]
        print(f"== {name}: qhflow {' '.join(cmd)}", flush=True)
        if qhflow(cmd) != 0:
            return 1
        s = summarize(list(csv.DictReader((out / "scf.csv").open())))
        lines.append(f"| {name} | {s['n']} | {s['minao']:.1f} | {s['qhflow']:.1f} | "
                     f"{s['ratio']:.0%} | {s['median']:.0%} | {s['wall']:.0%} | {s['fail_q']} "
                     f"| {s['fail_m']} "
                     f"| {s['off']} |")
        # rewritten after every setting, so a stopped run keeps what it measured
        (Path(args.out) / "transfer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
