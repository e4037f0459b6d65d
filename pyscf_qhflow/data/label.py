"""Labelling molecules with PySCF and writing HDF5 shards (layout: ``FORMAT.md``).

Protocol (the QH9 one, as the shared shards): :func:`pyscf_qhflow.hinit.protocol_ks`
(restricted ``dft.RKS``, spherical basis, ``grids.level``, no density fitting);
the stored Fock matrix is ``mf.get_fock(dm=mf.make_rdm1())`` at convergence.
Neutral closed-shell molecules only, as the format says.  Two starts
(``guess``, recorded per molecule as ``scf_init_guess``, ``scf_cycles``,
``scf_conv_tol``):

* ``'minao'``: PySCF's default start, to ``conv_tol = 1e-10`` (shards 000-005);
* ``'qhflow'`` (fast labels): H_init is built first, on the SCF's own grids and
  in-core integrals (:func:`pyscf_qhflow.hinit.hinit_beside`), the model
  predicts from it, and the SCF starts from that density, to ``conv_tol = 1e-8``
  and ``conv_tol_grad = 1e-4`` (:data:`FAST_CONV_TOL`): 7-8 cycles instead of
  12-13, and the H_init to store comes with it at no extra Fock build.  How far
  such a label is from a tight one is measured by ``benchmarks/bench_fast_labels.py``.

With ``with_hinit`` each record carries its H_init, and :func:`write_shard`
stores it beside the label (dataset ``hinit``), so training builds nothing.

:func:`label_to_shards` is the resumable driver behind ``qhflow label``: the
molecule list is cut into shards of ``shard_size`` in a fixed order; a shard
file appears atomically (:func:`pyscf_qhflow.fileio.atomic_path`) only when all
its molecules are done, so a killed run restarts at the first missing shard.
Molecules that fail (exception, bad geometry) are listed with the reason in
the shard attribute ``failures`` (JSON) and left out of the datasets;
unconverged ones are kept with ``converged = False`` and listed there too.
By default each molecule's H_init (the MinAO-density Fock matrix the model
starts from) is built on the SCF's own grids and stored in the shard.
"""
from __future__ import annotations

import ast
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from pyscf import __version__ as pyscf_version
from pyscf import gto
from pyscf.lib import logger
from tqdm.auto import tqdm

from .. import keys
from ..errors import check_geometry
from ..fileio import atomic_path, atomic_write_text
from ..hinit import hinit_beside, protocol_ks
from ..scfrun import xyz_files_in
from .shardfile import dense_to_tril
from .splits import SPLIT_NAMES, split_of_key

__all__ = ["label_molecule", "write_shard", "shard_attrs", "MoleculeSpec",
           "molecules_from_xyz", "molecules_from_qm9", "molecules_from_smiles",
           "qm9_indices_in_shards", "label_to_shards", "HELD_OUT_EVERY",
           "LABEL_GUESSES", "TIGHT_CONV_TOL", "FAST_CONV_TOL", "default_conv_tol"]

LABEL_GUESSES = ("minao", "qhflow")
TIGHT_CONV_TOL = (1e-10, None)  # (conv_tol, conv_tol_grad): the QH9 protocol, from MinAO
FAST_CONV_TOL = (1e-8, 1e-4)  # from the model's guess (FORMAT.md, shards 006 on)


def default_conv_tol(guess: str) -> tuple[float, float | None]:
    """(conv_tol, conv_tol_grad) of the labelling protocol for a start ``guess``."""
    if guess not in LABEL_GUESSES:
        raise ValueError(f"guess must be one of {LABEL_GUESSES}, got {guess!r}")
    return FAST_CONV_TOL if guess == "qhflow" else TIGHT_CONV_TOL

# QM9 indices divisible by this are never labelled (held out, see FORMAT.md)
HELD_OUT_EVERY = 50
_QM9_NAME = re.compile(r"dsgdb9nsd_(\d+)")


# ---------------------------------------------------------------- one molecule

def _atoms_of(mol_or_atoms) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(Z int64, positions Angstrom, charge, spin) of a Mole, ase.Atoms, .xyz path or (Z, R)."""
    if isinstance(mol_or_atoms, gto.Mole):
        mol = mol_or_atoms
        return (mol.atom_charges().astype(np.int64), mol.atom_coords(unit="Angstrom"),
                mol.charge, mol.spin)
    if isinstance(mol_or_atoms, (str, os.PathLike)):
        from ..scfrun import load_molecule
        mol = load_molecule(mol_or_atoms, basis="sto-3g")
        return mol.atom_charges().astype(np.int64), mol.atom_coords(unit="Angstrom"), 0, mol.spin
    if hasattr(mol_or_atoms, "get_atomic_numbers"):  # ase.Atoms
        return (np.asarray(mol_or_atoms.get_atomic_numbers(), np.int64),
                np.asarray(mol_or_atoms.get_positions(), np.float64),
                int(round(sum(mol_or_atoms.get_initial_charges()))), 0)
    Z, R = mol_or_atoms
    return np.asarray(Z, np.int64), np.asarray(R, np.float64), 0, 0


def label_molecule(mol_or_atoms, xc: str = "b3lyp", basis: str = "def2-svp",
                   grid_level: int = 3, conv_tol: float | None = None, max_cycle: int = 100,
                   verbose: int = 0, with_hinit: bool = False, guess: str = "minao",
                   conv_tol_grad: float | None = None, model=None,
                   callback=None) -> dict:
    """Converged KS Fock matrix of one molecule in the labelling protocol.

    ``mol_or_atoms``: a ``gto.Mole`` (its geometry, charge and spin; rebuilt in
    ``basis``), an ``ase.Atoms``, an .xyz path, or ``(Z, positions_angstrom)``.
    ``guess``: ``'minao'`` or ``'qhflow'`` (``model``: a predictor, checkpoint
    path or None for the shipped weights); ``conv_tol`` and ``conv_tol_grad``
    default to the guess's protocol (:func:`default_conv_tol`).  ``callback``:
    PySCF's ``mf.callback``, called with the SCF's locals after every cycle
    (e.g. to keep the Fock matrix of an early cycle, as
    ``benchmarks/label_source_e2e.py`` does).
    Returns ``Z`` (natm,) int64, ``pos`` (natm, 3) Angstrom, ``fock`` (nao, nao)
    float64 Hartree PySCF order, ``energy`` Hartree, ``cycles`` (``mf.cycles``),
    ``converged``, ``scf_init_guess``, ``scf_conv_tol``.  With ``with_hinit``
    (always with ``guess='qhflow'``, where it is free), also ``hinit`` (nao, nao):
    the MinAO-density Fock matrix built on the SCF's grids and integrals
    (:func:`pyscf_qhflow.hinit.hinit_beside`).  Raises ``ValueError`` for
    charged or open-shell molecules (the shard format holds neutral singlets)
    and bad geometries.
    """
    tol, tol_grad = default_conv_tol(guess)
    conv_tol = tol if conv_tol is None else float(conv_tol)
    conv_tol_grad = tol_grad if conv_tol_grad is None else float(conv_tol_grad)
    Z, R, charge, spin = _atoms_of(mol_or_atoms)
    check_geometry(R)
    if charge != 0 or spin != 0 or (int(Z.sum()) - charge) % 2:
        raise ValueError(f"only neutral closed-shell molecules are labelled (charge={charge}, "
                         f"spin={spin}, {int(Z.sum()) - charge} electrons)")
    mol = gto.M(atom=[(int(z), r) for z, r in zip(Z, R)], basis=basis, unit="Angstrom",
                verbose=verbose)
    mf = protocol_ks(mol, xc=xc, grid_level=grid_level)
    mf.conv_tol = conv_tol
    if conv_tol_grad is not None:
        mf.conv_tol_grad = conv_tol_grad
    mf.max_cycle = max_cycle
    mf.callback = callback
    hinit = None
    if guess == "qhflow":
        dm0, hinit = _qhflow_start(mf, mol, xc, grid_level, model)
        energy = mf.kernel(dm0=dm0)
    else:
        mf.init_guess = "minao"
        energy = mf.kernel()
    fock = np.asarray(mf.get_fock(dm=mf.make_rdm1()))  # [nao, nao]
    logger.info(mf, "labelled from %s: E = %.10f, %d cycles, converged %s", guess, energy,
                mf.cycles, mf.converged)
    out = {keys.Z: Z, keys.POS: R, keys.FOCK: 0.5 * (fock + fock.T),
           keys.ENERGY: float(energy), "cycles": int(mf.cycles),
           "converged": bool(mf.converged), "scf_init_guess": guess,
           "scf_conv_tol": conv_tol}
    if with_hinit and hinit is None:
        # The SCF's grids were pruned (small_rho_cutoff) with this same MinAO
        # density in its first cycle, exactly as minao_fock() prunes fresh ones.
        hinit, _ = hinit_beside(mf, mol, xc, grid_level)
    if with_hinit or guess == "qhflow":
        out[keys.HINIT] = hinit
    return out


def _qhflow_start(mf, mol, xc: str, grid_level: int, model) -> tuple[np.ndarray, np.ndarray]:
    """(starting density, H_init) from the model, H_init built on ``mf``'s grids and integrals."""
    from ..guess.hook import density_from_fock, prepare, resolve_model
    hinit, _ = hinit_beside(mf, mol, xc, grid_level)
    predictor = resolve_model(model=model)
    layout = prepare(predictor, mol)
    same_protocol = str(getattr(predictor, "xc", "")).lower() == str(xc).lower()
    if layout is not None:
        fock = predictor.predict(mol, hinit=hinit if same_protocol else None,
                                 layout=layout).fock
    else:
        fock = predictor.predict_fock(mol)
    dm0, _ = density_from_fock(mf, mol, fock)
    return dm0, hinit


# ---------------------------------------------------------------- shard file

def shard_attrs(xc: str = "b3lyp", basis: str = "def2-svp", grid_level: int = 3,
                conv_tol: float = 1e-10, source: str = "", guess: str = "minao",
                conv_tol_grad: float | None = None) -> dict:
    """The file attributes of a shard (the set the shared shards carry)."""
    attrs = {
        "ao_order": "PySCF (spherical; p as px,py,pz)",
        "basis": basis,
        "cart": np.False_,
        "charge": np.int64(0),
        "conv_tol": np.float64(conv_tol),
        "fock_layout": ("per molecule: lower triangle of the nao x nao Fock matrix, row-major "
                        "(numpy.tril_indices order), float32; hinit likewise"),
        "init_guess": ("pyscf_qhflow model (warm start); see scf_init_guess" if guess == "qhflow"
                       else "minao"),
        "grid_level": np.int64(grid_level),
        "pyscf_version": pyscf_version,
        "source": source,
        "spin": np.int64(0),
        "units": "positions Angstrom; fock, hinit, energy Hartree",
        "xc": xc,
    }
    if conv_tol_grad is not None:
        attrs["conv_tol_grad"] = np.float64(conv_tol_grad)
    return attrs


def write_shard(path: str | os.PathLike, records: Sequence[dict], attrs: dict,
                failures: Sequence[dict] = ()) -> Path:
    """Write ``records`` as one shard in the FORMAT.md layout, atomically.

    Each record (:mod:`pyscf_qhflow.keys`): ``Z``, ``pos`` (Angstrom; the file's
    ``R``), ``fock`` (dense (nao, nao) or its lower triangle), ``energy``,
    ``cycles``, ``converged``, optional ``qm9_index`` (default -1), ``smiles``
    (default ''), ``scf_init_guess`` (default 'minao'), ``scf_conv_tol``
    (default the file's ``conv_tol``) and ``hinit`` (stored, laid out like
    ``fock``, when every record has it).  ``attrs`` are the file
    attributes (see :func:`shard_attrs`); ``failures`` (dicts with a ``reason``)
    go to the JSON attribute ``failures``.  Written through
    :func:`~pyscf_qhflow.fileio.atomic_path`, so ``path`` is either absent or complete.
    """
    path = Path(path)
    n = len(records)
    natoms = np.array([len(r[keys.Z]) for r in records], np.int32)
    trils = []
    for r in records:
        fock = np.asarray(r[keys.FOCK])
        trils.append(dense_to_tril(fock) if fock.ndim == 2 else fock.ravel())
    nao = np.array([int(round((np.sqrt(8 * len(t) + 1) - 1) / 2)) for t in trils], np.int32)
    for t, m in zip(trils, nao):
        if m * (m + 1) // 2 != len(t):
            raise ValueError(f"a Fock lower triangle of length {len(t)} is not n(n+1)/2")
    ntri = nao.astype(np.int64) * (nao + 1) // 2
    data = {  # HDF5 dataset name (FORMAT.md) -> values
        "qm9_index": np.array([int(r.get(keys.QM9_INDEX, -1)) for r in records], np.int64),
        "smiles": np.array([str(r.get("smiles", "")) for r in records], dtype=object),
        "natoms": natoms,
        "atom_offset": np.concatenate([[0], np.cumsum(natoms)[:-1]]).astype(np.int64)[:n],
        "Z": (np.concatenate([np.asarray(r[keys.Z]) for r in records]) if n
              else np.zeros(0)).astype(np.int8),
        "R": (np.concatenate([np.asarray(r[keys.POS], np.float64) for r in records]) if n
              else np.zeros((0, 3))).astype(np.float64),
        "nao": nao,
        "fock_offset": np.concatenate([[0], np.cumsum(ntri)[:-1]]).astype(np.int64)[:n],
        "fock": (np.concatenate(trils) if n else np.zeros(0)).astype(np.float32),
        "energy": np.array([r[keys.ENERGY] for r in records], np.float64),
        "converged": np.array([bool(r["converged"]) for r in records], bool),
        "scf_cycles": np.array([r["cycles"] for r in records], np.int32),
        "scf_init_guess": np.array([str(r.get("scf_init_guess", "minao")) for r in records],
                                   dtype=object),
        "scf_conv_tol": np.array([float(r.get("scf_conv_tol", attrs.get("conv_tol", 1e-10)))
                                  for r in records], np.float64),
    }
    if all(r.get("scf_init_guess", "minao") == "minao" for r in records):
        # the name shards 000-005 use (FORMAT.md), for readers of the old layout
        data["scf_cycles_minao"] = data["scf_cycles"].copy()
    if n and all(keys.HINIT in r for r in records):
        data["hinit"] = np.concatenate([dense_to_tril(np.asarray(r[keys.HINIT]))
                                        for r in records]).astype(np.float32)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for k, v in attrs.items():
                f.attrs[k] = v
            f.attrs["failures"] = json.dumps(list(failures))
            for name, values in data.items():
                if name in ("smiles", "scf_init_guess"):
                    f.create_dataset(name, data=values, dtype=h5py.string_dtype("utf-8"))
                elif name in ("fock", "hinit") and values.size:
                    f.create_dataset(name, data=values, compression="gzip")
                else:
                    f.create_dataset(name, data=values)
    return path


# ---------------------------------------------------------------- molecule lists

@dataclass(frozen=True)
class MoleculeSpec:
    """One molecule to label: a name, its QM9 index (-1 if none), SMILES, and
    either an .xyz path (``xyz``), atomic numbers and Angstrom positions, or
    neither (the geometry is then embedded from ``smiles`` with RDKit, see
    :mod:`.smiles`)."""
    name: str
    qm9_index: int = -1
    smiles: str = ""
    xyz: str | None = None
    Z: tuple | None = None
    R: tuple | None = None

    def atoms(self):
        if self.xyz is not None:
            return self.xyz
        if self.Z is None and self.smiles:
            from .smiles import smiles_to_geometry
            return smiles_to_geometry(self.smiles)
        return np.asarray(self.Z, np.int64), np.asarray(self.R, np.float64)


def _held_out(qm9_index: int) -> bool:
    return qm9_index >= 0 and qm9_index % HELD_OUT_EVERY == 0


def molecules_from_xyz(inputs: Iterable[str | os.PathLike]) -> list[MoleculeSpec]:
    """.xyz files and directories of them (sorted) -> specs.

    A file named like ``dsgdb9nsd_000123.xyz`` carries QM9 index 123; held-out
    QM9 indices (divisible by 50) are dropped here.
    """
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths.extend(xyz_files_in(p))
        elif p.is_file():
            paths.append(p)
        else:
            raise FileNotFoundError(f"no such .xyz file or directory: {p}")
    specs = []
    for p in paths:
        m = _QM9_NAME.search(p.stem)
        q = int(m.group(1)) if m else -1
        if not _held_out(q):
            specs.append(MoleculeSpec(name=p.stem, qm9_index=q, xyz=str(p)))
    return specs


def molecules_from_smiles(path: str | os.PathLike) -> list[MoleculeSpec]:
    """A SMILES file (one ``SMILES [name]`` a line; ``#`` comments) -> specs.

    The name defaults to ``smiles_<line number>``; names must be unique.
    Geometries are embedded when a spec is labelled (:meth:`MoleculeSpec.atoms`).
    """
    specs, seen = [], set()
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        name = fields[1] if len(fields) > 1 else f"smiles_{lineno}"
        if name in seen:
            raise ValueError(f"{path}:{lineno}: molecule name {name!r} appears twice")
        seen.add(name)
        specs.append(MoleculeSpec(name=name, smiles=fields[0]))
    if not specs:
        raise ValueError(f"no SMILES in {path}")
    return specs


def qm9_indices_in_shards(sources: Iterable[str | os.PathLike]) -> set[int]:
    """QM9 indices present in the shards of ``sources`` (directories, globs, files)."""
    from .shardfile import find_shards
    found: set[int] = set()
    for source in sources:
        for path in find_shards(source):
            with h5py.File(path, "r") as f:
                found.update(int(q) for q in f["qm9_index"][:])
    return found


def _qm9pack_table():
    """QM9 as a pandas table (Index, SMILES, Elements, XYZ_Ang) from ``qm9pack``'s CSVs.

    The CSVs are read directly: ``import qm9pack`` needs ``pkg_resources``,
    which recent setuptools no longer ship.
    """
    import importlib.util
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("QM9 input needs the optional package qm9pack: "
                          "pip install pyscf-qhflow[data]")
    import pandas as pd
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    parts = sorted(data.glob("qm9_part*.csv"))
    if not parts:
        raise FileNotFoundError(f"qm9pack has no qm9_part*.csv files in {data}")
    cols = ["Index", "SMILES", "Elements", "XYZ_Ang"]
    return pd.concat([pd.read_csv(f, usecols=cols) for f in parts], ignore_index=True)


def molecules_from_qm9(start: int = 1, stop: int | None = None, sample: int | None = None,
                       seed: int = 0, split: str | None = None,
                       exclude: Iterable[int] = (), shuffle: bool = False) -> list[MoleculeSpec]:
    """QM9 geometries from ``qm9pack`` with index in [start, stop), never a multiple of 50.

    ``split``: keep only molecules that :func:`~pyscf_qhflow.data.splits.split_by_qm9_index`
    (default fractions, seed 0) puts in ``'train'``, ``'val'`` or ``'test'``,
    e.g. to grow the test split.  ``exclude``: QM9 indices to skip (already labelled).
    ``sample``: a random draw of that many (``numpy.random.default_rng(seed)``),
    in draw order; else all, in index order, or with ``shuffle`` in a random
    order (a permutation seeded by ``seed`` of the range before ``exclude``, so
    excluding more molecules never reorders the rest).
    """
    df = _qm9pack_table()
    index = df["Index"].to_numpy(np.int64)
    keep = (index >= start) & ((index < stop) if stop is not None else True)
    keep &= index % HELD_OUT_EVERY != 0
    excluded = np.isin(index, np.fromiter(exclude, np.int64))
    if shuffle:
        if split is not None or sample is not None:
            raise ValueError("shuffle takes all molecules of the range: no split or sample")
        rows = np.random.default_rng(seed).permutation(np.flatnonzero(keep))
        return _qm9_specs(df, rows[~excluded[rows]])
    keep &= ~excluded
    if split is not None:
        if split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
        want = SPLIT_NAMES.index(split)
        keep[keep] = [split_of_key(f"qm9:{q}") == want for q in index[keep]]
    rows = np.flatnonzero(keep)
    if sample is not None:
        if sample > len(rows):
            raise ValueError(f"asked for {sample} QM9 molecules, only {len(rows)} available")
        rows = np.random.default_rng(seed).choice(rows, size=sample, replace=False)
    return _qm9_specs(df, rows)


def _qm9_specs(df, rows) -> list[MoleculeSpec]:
    """Specs of the qm9pack table's ``rows``, in that order."""
    specs = []
    for r in rows:
        row = df.iloc[int(r)]
        symbols = ast.literal_eval(row["Elements"])
        coords = np.asarray(ast.literal_eval(row["XYZ_Ang"]), np.float64).reshape(-1, 3)
        Z = tuple(int(gto.charge(s)) for s in symbols)
        specs.append(MoleculeSpec(name=f"qm9_{int(row['Index'])}", qm9_index=int(row["Index"]),
                                  smiles=str(row["SMILES"]), Z=Z,
                                  R=tuple(map(tuple, coords.tolist()))))
    return specs


# ---------------------------------------------------------------- driver

def _label_task(spec: MoleculeSpec, protocol: dict, with_hinit: bool = False) -> dict:
    """Label one spec; never raises for a bad molecule (returns ``error`` instead)."""
    try:
        out = label_molecule(spec.atoms(), **protocol, with_hinit=with_hinit)
    except Exception as err:  # recorded in the shard's failures, run goes on
        return {"name": spec.name, keys.QM9_INDEX: spec.qm9_index,
                "error": f"{type(err).__name__}: {err}"[:500]}
    out.update({"name": spec.name, keys.QM9_INDEX: spec.qm9_index, "smiles": spec.smiles})
    return out


def _worker_init(threads: int, ignore_sigint: bool = False) -> None:
    """A labelling worker: ``threads`` PySCF threads; with ``ignore_sigint`` a
    Ctrl-C reaches only the parent, which then ends the pool itself."""
    if ignore_sigint:
        import signal
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # torch, if the model's guess loads it
    from pyscf import lib
    lib.num_threads(threads)


def _manifest(specs, protocol, shard_size, prefix) -> dict:
    names = hashlib.sha1("\n".join(s.name for s in specs).encode()).hexdigest()
    return {"protocol": protocol, "shard_size": shard_size, "prefix": prefix,
            "n_molecules": len(specs), "molecules_sha1": names}


def label_to_shards(specs: Sequence[MoleculeSpec], out_dir: str | os.PathLike,
                    xc: str = "b3lyp", basis: str = "def2-svp", grid_level: int = 3,
                    conv_tol: float | None = None, max_cycle: int = 100, shard_size: int = 50,
                    shard: tuple[int, int] = (0, 1), jobs: int = 1, prefix: str | None = None,
                    source: str = "", progress: bool = True, store_hinit: bool = True,
                    guess: str = "minao", conv_tol_grad: float | None = None,
                    model: str | None = None) -> dict:
    """Label ``specs`` into shards ``{prefix}_{k:03d}.h5`` of ``out_dir``, resumably.

    Shard k holds ``specs[k*shard_size : (k+1)*shard_size]``.  Shards already
    present are skipped; ``shard=(i, N)`` handles only shards with
    ``k % N == i`` (job arrays).  ``manifest.json`` in ``out_dir`` pins the
    molecule list and protocol; a rerun with a different one is refused.
    ``store_hinit``: also build each molecule's H_init on the SCF's own grids
    and store it in the shard (dataset ``hinit``), so training builds nothing.
    ``guess``, ``conv_tol``, ``conv_tol_grad``, ``model``: the start and
    tolerances of :func:`label_molecule` (``model``: a checkpoint path, or None
    for the shipped weights; each worker loads it once).
    Returns counts: ``shards_written``, ``shards_skipped``, ``labelled``, ``failed``,
    ``unconverged``.
    """
    i_shard, n_shard = shard
    if not 0 <= i_shard < n_shard:
        raise ValueError(f"shard must be i/N with 0 <= i < N, got {i_shard}/{n_shard}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if prefix is None:
        prefix = f"qm9_{_file_token(xc)}_{_file_token(basis)}"
    tol, tol_grad = default_conv_tol(guess)
    conv_tol = tol if conv_tol is None else float(conv_tol)
    conv_tol_grad = tol_grad if conv_tol_grad is None else float(conv_tol_grad)
    protocol = {"xc": xc, "basis": basis, "grid_level": grid_level, "conv_tol": conv_tol,
                "max_cycle": max_cycle, "guess": guess, "conv_tol_grad": conv_tol_grad,
                "model": None if model is None else str(model)}
    manifest = _manifest(specs, protocol, shard_size, prefix)
    mpath = out / "manifest.json"
    if mpath.exists():
        old = json.loads(mpath.read_text())
        if old != manifest:
            raise ValueError(f"{out} holds a different labelling run ({mpath} differs: "
                             "molecule list, protocol, shard size or prefix); use another "
                             "output directory")
    else:
        atomic_write_text(mpath, json.dumps(manifest, indent=1))

    n_total = (len(specs) + shard_size - 1) // shard_size
    mine = [k for k in range(n_total) if k % n_shard == i_shard]
    pending = [k for k in mine if not (out / f"{prefix}_{k:03d}.h5").exists()]
    counts = {"shards_written": 0, "shards_skipped": len(mine) - len(pending),
              "labelled": 0, "failed": 0, "unconverged": 0}
    todo = [(k, s) for k in pending for s in specs[k * shard_size:(k + 1) * shard_size]]
    attrs = shard_attrs(xc, basis, grid_level, conv_tol, source, guess, conv_tol_grad)
    bar = tqdm(total=len(todo), desc="label", unit="mol", disable=not progress)
    pool = None
    if jobs > 1:
        pool = concurrent.futures.ProcessPoolExecutor(
            jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
            initargs=(max(1, (os.cpu_count() or 1) // jobs),))
        results = pool.map(_label_task, [s for _, s in todo], [protocol] * len(todo),
                           [store_hinit] * len(todo))
    else:
        results = (_label_task(s, protocol, store_hinit) for _, s in todo)
    try:
        done: dict[int, list] = {}
        for (k, _), res in zip(todo, results):
            done.setdefault(k, []).append(res)
            bar.update(1)
            if len(done[k]) == len(specs[k * shard_size:(k + 1) * shard_size]):
                _finish_shard(out / f"{prefix}_{k:03d}.h5", done.pop(k), attrs, counts)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return counts


def _finish_shard(path: Path, results: list[dict], attrs: dict, counts: dict) -> None:
    records = [r for r in results if "error" not in r]
    # entries of the shard's JSON attribute ``failures`` (FORMAT.md)
    failures = [{"name": r["name"], "qm9_index": r[keys.QM9_INDEX], "reason": r["error"]}
                for r in results if "error" in r]
    failures += [{"name": r["name"], "qm9_index": r[keys.QM9_INDEX],
                  "reason": f"SCF not converged in {r['cycles']} cycles (kept, converged=False)"}
                 for r in records if not r["converged"]]
    write_shard(path, records, attrs, failures)
    counts["shards_written"] += 1
    counts["labelled"] += len(records)
    counts["failed"] += sum("error" in r for r in results)
    counts["unconverged"] += sum(not r["converged"] for r in records)
    for fail in failures:
        tqdm.write(f"{path.name}: {fail['name']}: {fail['reason']}")


def _file_token(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", str(text).lower())
