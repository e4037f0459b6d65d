"""Reading labelled HDF5 shards, and the H_init cache beside them.

A shard (layout in the data directory's ``FORMAT.md``, written by
:func:`pyscf_qhflow.data.label.write_shard`) holds n molecules: geometries,
the lower triangle of the converged Fock matrix (float32, PySCF AO order),
energies and SCF bookkeeping.  :class:`ShardDataset` serves them as the
per-molecule records of :mod:`pyscf_qhflow.keys`, optionally with the overlap
matrix and H_init (:func:`pyscf_qhflow.hinit.minao_fock`).

H_init costs one Fock build per molecule (seconds), so it is cached in one
HDF5 side file per shard (the shard directory may be read-only), in
``cache_dir`` (default: ``$QHFLOW_CACHE`` when set, else
``~/.cache/pyscf_qhflow/hinit``).  A side file stores, per molecule index
inside the shard, the lower triangle of H_init in float64 (same
``numpy.tril_indices`` order as the shard), and records in its attributes the
protocol (``xc``, ``basis``, ``grid_level``) and the source shard (file name,
size and a digest of its geometries).  A side file that does not match is
ignored and rebuilt.  Updates are copy-on-write: copy the side file, add the
new entries, ``fsync``, ``os.replace`` -- under an ``fcntl`` lock -- so a killed
process leaves either the old or the new complete file, never a corrupt one.

Fill the cache ahead of training with :func:`precompute_hinit` or::

    python -m pyscf_qhflow.data.shards --precompute /path/to/shards [--jobs N]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import fcntl
import glob as globlib
import hashlib
import logging
import multiprocessing
import os
import re
import shutil
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from .. import keys

__all__ = ["SHARD_PATTERN", "find_shards", "read_protocol", "check_protocol",
           "default_cache_dir", "tril_to_dense", "dense_to_tril", "ShardDataset",
           "HInitCache", "precompute_hinit", "split_by_qm9_index", "split_indices", "split_of_key",
           "SPLIT_NAMES"]

log = logging.getLogger(__name__)

SHARD_PATTERN = "qm9_b3lyp_def2svp_*.h5"
HINIT_FORMAT_VERSION = 1
# arrays read into memory when a dataset is built (everything but Z, R, fock)
_INDEX_FIELDS = ("qm9_index", "natoms", "atom_offset", "nao", "fock_offset", "energy",
                 "converged")


# ---------------------------------------------------------------- files, protocol

def find_shards(path_or_glob: str | os.PathLike | Sequence,
                pattern: str = SHARD_PATTERN) -> list[Path]:
    """Shard files, sorted: a directory's ``pattern`` files, one file, a glob, or a list.

    Raises ``FileNotFoundError`` naming what was searched when nothing matches.
    """
    if isinstance(path_or_glob, (list, tuple)):
        found = sorted({p for item in path_or_glob for p in find_shards(item, pattern)})
        if not found:
            raise FileNotFoundError("no shard files in an empty list")
        return found
    p = Path(path_or_glob).expanduser()
    if p.is_dir():
        found = sorted(p.glob(pattern))
        if not found:
            others = sorted(q.name for q in p.glob("*.h5"))[:5]
            hint = (f"; it has other .h5 files ({', '.join(others)}): pass a glob such as "
                    f"'{p}/*.h5'" if others else "")
            raise FileNotFoundError(f"no shard files '{pattern}' in directory {p}{hint}")
        return found
    if p.is_file():
        return [p]
    found = sorted(Path(q) for q in globlib.glob(str(p)) if Path(q).is_file())
    if not found:
        raise FileNotFoundError(f"no shard files match {str(path_or_glob)!r} "
                                "(expected a directory, an .h5 file or a glob)")
    return found


def read_protocol(path: str | os.PathLike) -> dict:
    """The attributes of a shard file (``xc``, ``basis``, ``grid_level``, ...).

    Strings are returned as ``str`` and numpy scalars as Python scalars; the
    key ``'file'`` (not an HDF5 attribute) holds ``path`` for error messages.
    """
    with h5py.File(path, "r") as f:
        attrs = {k: _py(v) for k, v in f.attrs.items()}
    attrs["file"] = str(path)
    return attrs


def _py(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _norm_xc(xc: str) -> str:
    return str(xc).strip().lower().replace(" ", "")


def _norm_basis(basis: str) -> str:
    # as PySCF does for basis names: case, '-', '_' and spaces do not matter
    return re.sub(r"[-_\s]", "", str(basis).lower())


def check_protocol(attrs: dict, xc: str, basis: str) -> None:
    """Raise ``ValueError`` naming the file when a shard's ``xc``/``basis`` differ.

    Comparison ignores case (and, for the basis, '-', '_' and spaces, as PySCF does).
    """
    where = attrs.get("file", "<shard>")
    for name, want, norm in (("xc", xc, _norm_xc), ("basis", basis, _norm_basis)):
        if name not in attrs:
            raise ValueError(f"{where}: no '{name}' attribute; not a qhflow shard "
                             "(see FORMAT.md)")
        if norm(attrs[name]) != norm(want):
            raise ValueError(f"{where} was labelled with {name}={attrs[name]!r} but "
                             f"{name}={want!r} was requested; use shards of the same "
                             "protocol or change the requested protocol")
    if attrs.get("cart", False):
        raise ValueError(f"{where} uses a Cartesian basis; qhflow works in spherical AOs")


def default_cache_dir() -> Path:
    """``$QHFLOW_CACHE`` when set, else ``~/.cache/pyscf_qhflow/hinit``."""
    env = os.environ.get("QHFLOW_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pyscf_qhflow" / "hinit"


def tril_to_dense(values: np.ndarray, nao: int) -> np.ndarray:
    """Lower triangle (``numpy.tril_indices(nao)`` order) -> symmetric (nao, nao) float64."""
    out = np.zeros((nao, nao))
    out[np.tril_indices(nao)] = values
    return out + np.tril(out, -1).T


def dense_to_tril(matrix: np.ndarray) -> np.ndarray:
    """(nao, nao) -> its lower triangle in ``numpy.tril_indices`` order."""
    return np.asarray(matrix)[np.tril_indices(len(matrix))]


def _build_mol(Z: np.ndarray, pos: np.ndarray, basis: str, charge: int = 0):
    from pyscf import gto
    spin = int(np.sum(Z) - charge) % 2
    return gto.M(atom=[(int(z), r) for z, r in zip(Z, pos)], basis=basis, unit="Angstrom",
                 charge=charge, spin=spin, verbose=0)


def _hinit_tril(Z: np.ndarray, pos: np.ndarray, basis: str, xc: str, grid_level: int,
                charge: int = 0) -> np.ndarray:
    from .. import hinit
    mol = _build_mol(Z, pos, basis, charge)
    return dense_to_tril(hinit.minao_fock(mol, xc=xc, grid_level=grid_level))


# ------------------------------------------------------------------ H_init cache

@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(text)).strip("-").lower()


class HInitCache:
    """The H_init side file of one shard (see the module docstring).

    ``get(i)`` returns the cached lower triangle of molecule ``i`` of the shard
    or None; ``put({i: tril, ...})`` adds entries atomically.
    """

    def __init__(self, shard: str | os.PathLike, cache_dir: str | os.PathLike,
                 xc: str, basis: str, grid_level: int):
        self.shard = Path(shard)
        self.cache_dir = Path(cache_dir).expanduser()
        self.xc, self.basis, self.grid_level = xc, basis, int(grid_level)
        self._identity: dict | None = None
        # the geometry digest in the name keeps same-named shards of different
        # data sets from overwriting each other's side files
        digest = self.identity()["source_digest"][:12]
        self.path = self.cache_dir / (f"{self.shard.stem}.{digest}.{_safe_name(xc)}."
                                      f"{_safe_name(basis)}.grid{self.grid_level}.hinit.h5")
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._handle: h5py.File | None = None
        self._handle_checked = False
        self._warned: set = set()

    def _warn_once(self, msg: str, *args) -> None:
        stat = self.path.stat()
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    def identity(self) -> dict:
        """Attributes a valid side file must carry."""
        if self._identity is None:
            with h5py.File(self.shard, "r") as f:
                digest = hashlib.sha1()
                for name in ("qm9_index", "natoms", "Z", "R"):
                    digest.update(np.ascontiguousarray(f[name][()]).tobytes())
            self._identity = {
                "format_version": HINIT_FORMAT_VERSION,
                "xc": _norm_xc(self.xc), "basis": _norm_basis(self.basis),
                "grid_level": self.grid_level,
                "source_name": self.shard.name,
                "source_size": self.shard.stat().st_size,
                "source_digest": digest.hexdigest(),
            }
        return self._identity

    def _mismatch(self, f: h5py.File) -> str | None:
        for k, want in self.identity().items():
            have = _py(f.attrs.get(k))
            if have != want:
                return f"{k}: side file has {have!r}, expected {want!r}"
        return None

    def _open(self) -> h5py.File | None:
        """Open the side file read-only, or None when absent or invalid (it is rebuilt)."""
        if not self.path.exists():
            return None
        try:
            f = h5py.File(self.path, "r")
        except OSError as err:
            self._warn_once("H_init cache %s is unreadable (%s); it will be rebuilt",
                            self.path, err)
            return None
        why = self._mismatch(f)
        if why is not None:
            f.close()
            self._warn_once("H_init cache %s does not match %s (%s); it will be rebuilt",
                            self.path, self.shard, why)
            return None
        return f

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle, self._handle_checked = None, False

    def get(self, i: int, refresh: bool = False) -> np.ndarray | None:
        """Cached lower triangle of molecule ``i`` (float64), or None."""
        if refresh or not self._handle_checked:
            self.close()
            self._handle, self._handle_checked = self._open(), True
        if self._handle is None or str(i) not in self._handle["hinit"]:
            return None
        return self._handle["hinit"][str(i)][()]

    def cached(self) -> set[int]:
        """Indices (inside the shard) present in a valid side file."""
        f = self._open()
        if f is None:
            return set()
        with f:
            return {int(k) for k in f["hinit"].keys()}

    def put(self, entries: dict[int, np.ndarray]) -> None:
        """Add ``{index: lower triangle}`` atomically (copy, add, fsync, rename, under a lock)."""
        if not entries:
            return
        with _locked(self._lock_path):
            tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
            for stale in self.path.parent.glob(self.path.name + ".tmp*"):
                stale.unlink()  # left by a killed writer; we hold the lock
            current = self._open()
            if current is not None:
                current.close()
                shutil.copyfile(self.path, tmp)
            with h5py.File(tmp, "a" if current is not None else "w") as f:
                if current is None:
                    for k, v in self.identity().items():
                        f.attrs[k] = v
                    from pyscf import __version__ as pyscf_version
                    f.attrs["pyscf_version"] = pyscf_version
                    f.attrs["layout"] = ("per molecule index inside the source shard: lower "
                                         "triangle of H_init (Hartree, PySCF AO order), "
                                         "numpy.tril_indices order, float64")
                    f.create_group("hinit")
                group = f["hinit"]
                for i, values in entries.items():
                    if str(int(i)) not in group:
                        group.create_dataset(str(int(i)), data=np.asarray(values, np.float64))
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self._handle_checked = False  # reopen on the next get


# ------------------------------------------------------------------ dataset

@dataclass
class _Shard:
    path: Path
    attrs: dict
    index: dict  # _INDEX_FIELDS -> arrays


class ShardDataset(torch.utils.data.Dataset):
    """Molecules of several shards as :mod:`pyscf_qhflow.keys` records.

    Args:
        shards: a directory, glob, file or list of them (see :func:`find_shards`).
        xc, basis: the protocol every shard must carry (else ``ValueError``).
        with_overlap: add ``overlap`` (S, computed from the geometry; cheap).
        with_hinit: add ``hinit`` (H_init, cached in ``cache_dir``; see module docstring).
        exclude_unconverged: skip entries with ``converged == False`` (count logged).
        cache_dir: H_init cache directory (default :func:`default_cache_dir`).
        grid_level: DFT grid level of H_init (the model protocol's).

    Only the index arrays are read here; HDF5 files are opened lazily, once
    per process (DataLoader workers each open their own handles).

    ``dataset[i]`` is a dict: ``Z`` (natm,) int64, ``pos`` (natm, 3) float64
    Angstrom, ``fock`` (nao, nao) float64 Hartree PySCF order (rebuilt from the
    stored float32 lower triangle), ``energy`` float64 Hartree, ``qm9_index``
    int64, and ``overlap``/``hinit`` (nao, nao) float64 when requested.
    """

    def __init__(self, shards, xc: str = "b3lyp", basis: str = "def2-svp",
                 with_overlap: bool = False, with_hinit: bool = False,
                 exclude_unconverged: bool = True, cache_dir: str | os.PathLike | None = None,
                 grid_level: int = 3):
        self.xc, self.basis, self.grid_level = xc, basis, int(grid_level)
        self.with_overlap, self.with_hinit = with_overlap, with_hinit
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        paths = find_shards(shards)
        self._shards: list[_Shard] = []
        which, local = [], []
        skipped = 0
        for k, path in enumerate(paths):
            attrs = read_protocol(path)
            check_protocol(attrs, xc, basis)
            with h5py.File(path, "r") as f:
                missing = [n for n in _INDEX_FIELDS if n not in f]
                if missing:
                    raise ValueError(f"{path}: missing datasets {missing}; not a qhflow "
                                     "shard (see FORMAT.md)")
                index = {n: f[n][()] for n in _INDEX_FIELDS}
            self._shards.append(_Shard(path, attrs, index))
            keep = np.ones(len(index["qm9_index"]), bool)
            if exclude_unconverged:
                keep &= index["converged"].astype(bool)
                skipped += int((~keep).sum())
            idx = np.flatnonzero(keep)
            which.append(np.full(len(idx), k))
            local.append(idx)
        if skipped:
            log.warning("ShardDataset: skipped %d unconverged molecules (converged == False)",
                        skipped)
        self.excluded_unconverged = skipped
        self._which = np.concatenate(which).astype(np.int64)  # [n] shard of each record
        self._local = np.concatenate(local).astype(np.int64)  # [n] index inside its shard
        self.qm9_index = self._gather("qm9_index").astype(np.int64)  # [n]
        self.natoms = self._gather("natoms").astype(np.int64)  # [n]
        self.nao = self._gather("nao").astype(np.int64)  # [n]
        self._files: dict[int, h5py.File] = {}
        self._caches: dict[int, HInitCache] = {}
        self._pid = os.getpid()

    def _gather(self, name: str) -> np.ndarray:
        parts = [s.index[name][self._local[self._which == k]]
                 for k, s in enumerate(self._shards)]
        return np.concatenate(parts) if parts else np.zeros(0)

    @property
    def shards(self) -> list[Path]:
        return [s.path for s in self._shards]

    def __len__(self) -> int:
        return len(self._local)

    def __repr__(self) -> str:
        return (f"ShardDataset({len(self)} molecules in {len(self._shards)} shards, "
                f"xc={self.xc!r}, basis={self.basis!r}, hinit={self.with_hinit}, "
                f"overlap={self.with_overlap})")

    # handles are per process: drop inherited ones after a fork, never pickle them
    def _check_pid(self) -> None:
        if os.getpid() != self._pid:
            self._files, self._caches, self._pid = {}, {}, os.getpid()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_files"], state["_caches"] = {}, {}
        return state

    def close(self) -> None:
        """Close open HDF5 handles (they reopen on the next access)."""
        for f in self._files.values():
            f.close()
        for c in self._caches.values():
            c.close()
        self._files, self._caches = {}, {}

    def _file(self, k: int) -> h5py.File:
        self._check_pid()
        if k not in self._files:
            self._files[k] = h5py.File(self._shards[k].path, "r")
        return self._files[k]

    def hinit_cache(self, k: int) -> HInitCache:
        """The H_init side file of shard ``k``."""
        self._check_pid()
        if k not in self._caches:
            self._caches[k] = HInitCache(self._shards[k].path, self.cache_dir, self.xc,
                                         self.basis, self.grid_level)
        return self._caches[k]

    def locate(self, i: int) -> tuple[Path, int]:
        """(shard path, index inside the shard) of record ``i``."""
        return self._shards[self._which[i]].path, int(self._local[i])

    def geometry(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(Z int64 (natm,), positions float64 (natm, 3) Angstrom) of record ``i``."""
        k, j = int(self._which[i]), int(self._local[i])
        index, f = self._shards[k].index, self._file(k)
        a, n = int(index["atom_offset"][j]), int(index["natoms"][j])
        return f["Z"][a:a + n].astype(np.int64), f["R"][a:a + n].astype(np.float64)

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} molecules")
        i %= len(self)
        k, j = int(self._which[i]), int(self._local[i])
        index, f = self._shards[k].index, self._file(k)
        Z, pos = self.geometry(i)  # [natm], [natm, 3]
        nao, o = int(index["nao"][j]), int(index["fock_offset"][j])
        fock = tril_to_dense(f["fock"][o:o + nao * (nao + 1) // 2], nao)  # [nao, nao]
        rec = {keys.Z: Z, keys.POS: pos, "fock": fock,
               "energy": np.float64(index["energy"][j]),
               "qm9_index": np.int64(index["qm9_index"][j])}
        if self.with_overlap:
            from .. import hinit
            rec["overlap"] = hinit.overlap(_build_mol(Z, pos, self.basis, self._charge(k)))
        if self.with_hinit:
            rec["hinit"] = tril_to_dense(self._hinit_tril(k, j, Z, pos), nao)
        return rec

    def _charge(self, k: int) -> int:
        return int(self._shards[k].attrs.get("charge", 0))

    def _hinit_tril(self, k: int, j: int, Z: np.ndarray, pos: np.ndarray) -> np.ndarray:
        f = self._file(k)
        stored_level = int(self._shards[k].attrs.get("grid_level", -1))
        if keys.HINIT in f and stored_level == self.grid_level:
            # stored beside the label (FORMAT.md): no build, no cache
            index = self._shards[k].index
            nao, o = int(index["nao"][j]), int(index["fock_offset"][j])
            return f[keys.HINIT][o:o + nao * (nao + 1) // 2]
        cache = self.hinit_cache(k)
        values = cache.get(j)
        if values is None:
            values = cache.get(j, refresh=True)  # another process may have added it
        if values is None:
            values = _hinit_tril(Z, pos, self.basis, self.xc, self.grid_level, self._charge(k))
            cache.put({j: values})
        return values


# ------------------------------------------------------------------ precompute

def _precompute_task(args):
    k, j, Z, pos, basis, xc, grid_level, charge = args
    return k, j, _hinit_tril(Z, pos, basis, xc, grid_level, charge)


def _single_thread_worker() -> None:
    from pyscf import lib
    lib.num_threads(1)


def precompute_hinit(dataset: ShardDataset, jobs: int = 1, progress: bool = True) -> int:
    """Fill the H_init cache of every record of ``dataset``; returns how many were computed.

    Resumable: cached entries are skipped and each new entry is committed as
    soon as it is computed (see :class:`HInitCache`).  ``jobs > 1`` computes in
    a process pool (spawned, one PySCF thread per worker); the calling process
    is the only writer.
    """
    todo = []
    for k in range(len(dataset._shards)):
        done = dataset.hinit_cache(k).cached()
        for i in np.flatnonzero(dataset._which == k):
            j = int(dataset._local[i])
            if j not in done:
                Z, pos = dataset.geometry(int(i))
                todo.append((k, j, Z, pos, dataset.basis, dataset.xc, dataset.grid_level,
                             dataset._charge(k)))
    bar = tqdm(total=len(todo), desc="H_init", unit="mol", disable=not progress)
    if jobs <= 1:
        results = map(_precompute_task, todo)
        pool = None
    else:
        pool = concurrent.futures.ProcessPoolExecutor(
            jobs, mp_context=multiprocessing.get_context("spawn"),
            initializer=_single_thread_worker)
        results = (fut.result() for fut in concurrent.futures.as_completed(
            [pool.submit(_precompute_task, t) for t in todo]))
    try:
        for k, j, values in results:
            dataset.hinit_cache(k).put({j: values})
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return len(todo)


# ------------------------------------------------------------------ splits

def _split_key(dataset: ShardDataset, i: int) -> str:
    q = int(dataset.qm9_index[i])
    if q >= 0:
        return f"qm9:{q}"
    Z, pos = dataset.geometry(i)  # not from QM9: hash the geometry (rounded to 1e-6 A)
    digest = hashlib.sha1(Z.tobytes() + np.round(pos, 6).tobytes()).hexdigest()
    return f"geom:{digest}"


def split_by_qm9_index(dataset: ShardDataset, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic (train, val, test) record indices by hashing each molecule's QM9 index.

    Molecule ``q`` goes to the split whose cumulative fraction first exceeds
    ``u = blake2b(f"{seed}:qm9:{q}") / 2**64`` in [0, 1), so its split depends only
    on its QM9 index and ``seed``: adding shards never moves a molecule, and
    duplicates of a molecule share a split.  Records without a QM9 index (-1)
    are hashed by their geometry instead.  Split sizes follow ``fractions``
    only on average.
    """
    bounds = _split_bounds(fractions)
    bucket = np.array([_bucket(_split_key(dataset, i), bounds, seed)
                       for i in range(len(dataset))], dtype=np.int64)
    return tuple(np.flatnonzero(bucket == b) for b in range(3))


SPLIT_NAMES = ("train", "val", "test")


def split_indices(dataset: ShardDataset, split: str, limit: int | None = None,
                  seed: int = 0) -> list[int]:
    """Record indices of one split of :func:`split_by_qm9_index` (or ``'all'``), the first ``limit``."""
    if split == "all":
        idx = list(range(len(dataset)))
    elif split in SPLIT_NAMES:
        idx = [int(i) for i in split_by_qm9_index(dataset, seed=seed)[SPLIT_NAMES.index(split)]]
    else:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLIT_NAMES + ('all',)}")
    return idx[:limit] if limit else idx


def _split_bounds(fractions: Sequence[float]) -> np.ndarray:
    """Checked fractions -> the two cumulative bounds (train | val | test) in [0, 1]."""
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or np.any(fr < 0) or abs(fr.sum() - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, "
                         f"got {tuple(fractions)}")
    return np.cumsum(fr)[:2]


def _bucket(key: str, bounds: np.ndarray, seed: int) -> int:
    h = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8)
    u = int.from_bytes(h.digest(), "little") / 2.0**64
    return int(np.searchsorted(bounds, u, side="right"))


def split_of_key(key: str, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> int:
    """Split (0 train, 1 val, 2 test) of one molecule key, e.g. ``"qm9:123"``.

    The rule behind :func:`split_by_qm9_index`; exposed so that new molecules
    can be labelled for a chosen split (``qhflow label --qm9-split test``).
    """
    return _bucket(key, _split_bounds(fractions), seed)


# ------------------------------------------------------------------ entry point

def main(argv: list[str] | None = None) -> int:
    """``python -m pyscf_qhflow.data.shards --precompute DIR``: fill the H_init cache."""
    p = argparse.ArgumentParser(prog="python -m pyscf_qhflow.data.shards",
                                description="Fill the H_init cache of labelled shards.")
    p.add_argument("--precompute", required=True, metavar="SHARDS",
                   help="directory, glob or file of shards")
    p.add_argument("--cache-dir", default=None,
                   help=f"H_init cache directory (default {default_cache_dir()})")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--xc", default="b3lyp")
    p.add_argument("--basis", default="def2-svp")
    p.add_argument("--grid-level", type=int, default=3)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    ds = ShardDataset(args.precompute, xc=args.xc, basis=args.basis, with_hinit=True,
                      cache_dir=args.cache_dir, grid_level=args.grid_level)
    log.info("%r; cache %s", ds, ds.cache_dir)
    n = precompute_hinit(ds, jobs=args.jobs, progress=not args.no_progress)
    log.info("computed %d H_init matrices; %d were cached already", n, len(ds) - n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
