"""How far can a B3LYP/def2-SVP guess go in another functional or basis? (issue #7)

The qhflow guess hands HF, PBE0 or a def2-TZVP calculation the density of a
predicted B3LYP/def2-SVP Fock matrix. Even a perfect prediction is then the
*converged B3LYP/def2-SVP* density, not the target's, so the target SCF still
has to move. This measures that ceiling: each test molecule runs in the
target setting from

* ``minao``  - PySCF's MinAO guess,
* ``qhflow`` - the shipped network (the usual qhflow guess),
* ``label``  - the same qhflow code path with a stand-in predictor that
  returns the shard's converged B3LYP/def2-SVP Fock matrix (the best any
  B3LYP/def2-SVP model could predict).

If ``label`` needs, say, 75% of MinAO's cycles, no better B3LYP/def2-SVP
network can reach a 60% target there. ``b3lyp`` (the training setting) is the
control: ``label`` then starts at the converged density. ``cation`` asks
whether the neutral molecule's exact density also leads a UKS cation to the
other (lower) minimum that the qhflow guess reaches (``bench_ion_states.py``).

    OMP_NUM_THREADS=1 python benchmarks/transfer_ceiling.py --shards ../shared/data \\
        --limit 6 --settings hf pbe0 --out benchmarks/out/transfer_ceiling

One resumable CSV per setting under ``--out``; the table is rewritten after
each setting (``ceiling.md``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
from pyscf import gto
from tqdm.auto import tqdm

from pyscf_qhflow.benchmark import SCF_FIELDS, bench_scf_molecule, csv_appender, read_rows
from pyscf_qhflow.checkpoint import load_model
from pyscf_qhflow.data.dataset import ShardDataset
from pyscf_qhflow.data.shardfile import find_shards
from pyscf_qhflow.data.splits import split_indices

SETTINGS = {  # slug -> (title, xc, basis, charge); odd electron counts run as UKS doublets
    "b3lyp": ("B3LYP/def2-SVP (training setting, control)", "b3lyp", "def2-svp", 0),
    "hf": ("HF/def2-SVP", "hf", "def2-svp", 0),
    "pbe0": ("PBE0/def2-SVP", "pbe0", "def2-svp", 0),
    "def2_tzvp": ("B3LYP/def2-TZVP", "b3lyp", "def2-tzvp", 0),
    "cation": ("cation (+1, doublet, UKS) B3LYP/def2-SVP", "b3lyp", "def2-svp", 1),
}
GUESSES = ("minao", "qhflow", "label")
ENERGY_TOL = 1e-7  # Hartree, issue #7's bound for "same energy" (as in bench_transfer.py)


class LabelFock:
    """Stand-in predictor: the shard's converged Fock matrix of the same geometry.

    Declares the protocol of the labels (B3LYP/def2-SVP), so the qhflow guess
    treats it like the network: predicted in def2-SVP, projected into another
    basis, the user's functional applied to the resulting density.
    """

    name = "converged B3LYP/def2-SVP label"
    basis = "def2-svp"
    xc = "b3lyp"

    def __init__(self):
        self._fock: dict[bytes, np.ndarray] = {}

    @staticmethod
    def _key(Z: np.ndarray, pos_angstrom: np.ndarray) -> bytes:
        return np.asarray(Z, np.int64).tobytes() + np.round(pos_angstrom, 4).tobytes()

    def add(self, Z: np.ndarray, pos_angstrom: np.ndarray, fock: np.ndarray) -> None:
        self._fock[self._key(Z, pos_angstrom)] = np.asarray(fock, np.float64)

    def predict_fock(self, mol) -> np.ndarray:
        key = self._key(mol.atom_charges(), mol.atom_coords(unit="Angstrom"))
        if key not in self._fock:
            raise KeyError("no label for this geometry")
        return self._fock[key]


def cycle_table(rows: list[dict]) -> dict:
    """Mean cycles per guess and mean ratio to MinAO over molecules where all converged."""
    by_mol: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_mol.setdefault(r["molecule"], {})[r["guess"]] = r
    complete = [g for g in by_mol.values()
                if all(k in g and g[k]["converged"] == "True" for k in GUESSES)]
    out = {"n": len(complete), "failed": sum(
        1 for g in by_mol.values() for k in GUESSES if k in g and g[k]["converged"] != "True")}
    for k in GUESSES:
        cyc = [int(g[k]["cycles"]) for g in complete]
        out[k] = statistics.mean(cyc) if cyc else float("nan")
        out[f"{k}_ratio"] = (statistics.mean(int(g[k]["cycles"]) / int(g["minao"]["cycles"])
                                             for g in complete) if complete else float("nan"))
    out["off"] = sum(1 for g in complete for k in ("qhflow", "label")
                     if abs(float(g[k]["e_tot"]) - float(g["minao"]["e_tot"])) > ENERGY_TOL)
    out["used"] = all(g[k]["qhflow_used"] == "True" for g in complete for k in ("qhflow", "label"))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", required=True, nargs="+")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=6)
    p.add_argument("--start", type=int, default=0,
                   help="skip the first N molecules of the split (to share the --limit list "
                        "between processes, each with its own --out)")
    p.add_argument("--model", default="default")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--out", default="benchmarks/out/transfer_ceiling")
    args = p.parse_args(argv)

    ds = ShardDataset(find_shards(args.shards))
    network, label = load_model(args.model), LabelFock()
    molecules = []
    for i in split_indices(ds, args.split, args.limit)[args.start:]:
        rec = ds[i]
        label.add(rec["Z"], rec["pos"], rec["fock"])
        molecules.append((f"qm9_{int(rec['qm9_index'])}", rec["Z"], rec["pos"]))

    lines = ["| setting | molecules | minao cycles | qhflow (network) | label (converged B3LYP/def2-SVP) "
             "| network / minao | label / minao | energy off > 1e-7 Ha | failed runs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for slug in args.settings:
        title, xc, basis, charge = SETTINGS[slug]
        csv_path = Path(args.out) / slug / "scf.csv"
        done = {(r["molecule"], r["guess"]) for r in read_rows(csv_path)}
        for name, Z, pos in tqdm(molecules, desc=title):
            todo = [g for g in GUESSES if (name, g) not in done]
            if not todo:
                continue
            mol = gto.M(atom=[(int(z), r) for z, r in zip(Z, pos)], basis=basis,
                        unit="Angstrom", charge=charge, spin=(int(Z.sum()) - charge) % 2,
                        verbose=0)
            for guess in todo:  # one guess at a time, each row saved as it finishes
                model = label if guess == "label" else network
                row, = bench_scf_molecule(name, mol, ["qhflow" if guess == "label" else guess],
                                          model=model, xc=xc, include_converged=False)
                row["guess"] = guess
                with csv_appender(csv_path, SCF_FIELDS) as (_, writer):
                    writer.writerow(row)
        s = cycle_table(read_rows(csv_path))
        if not s["used"]:
            print(f"{title}: a qhflow or label run fell back to MinAO (qhflow_used False)")
            return 1
        lines.append(f"| {title} | {s['n']} | {s['minao']:.1f} | {s['qhflow']:.1f} | "
                     f"{s['label']:.1f} | {s['qhflow_ratio']:.0%} | {s['label_ratio']:.0%} | "
                     f"{s['off']} | {s['failed']} |")
        (Path(args.out) / "ceiling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
