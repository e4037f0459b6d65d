"""The H_init cache: side files beside shards that lack a stored ``hinit``.

Shards written since ``hinit`` joined the format (``FORMAT.md``) carry H_init
themselves and :class:`~pyscf_qhflow.data.dataset.ShardDataset` reads it from
there.  For shards without it, H_init (:func:`pyscf_qhflow.hinit.minao_fock`)
costs one Fock build per molecule (seconds), so it is built once and cached
in one HDF5 side file per shard (the shard directory may be read-only), in
``cache_dir`` (default: ``$QHFLOW_CACHE`` when set, else
``~/.cache/pyscf_qhflow/hinit``).

A side file stores, per molecule index inside the shard, the lower triangle
of H_init in float64 (same ``numpy.tril_indices`` order as the shard), and
records in its attributes the protocol (``xc``, ``basis``, ``grid_level``) and
the source shard (file name, size and a digest of its geometries).  A side
file that does not match is ignored and rebuilt.  Updates are copy-on-write
under an ``fcntl`` lock: copy the side file, add the new entries, then
replace it atomically (:func:`pyscf_qhflow.fileio.atomic_path`), so a killed
process leaves either the old or the new complete file, never a corrupt one.

This module owns the side files (:class:`HInitCache`, :func:`default_cache_dir`),
building one H_init (:func:`compute_hinit_tril`) and filling the cache of a
whole data set ahead of training (:func:`precompute_hinit`).
"""
from __future__ import annotations

import concurrent.futures
import fcntl
import hashlib
import logging
import multiprocessing
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
from tqdm.auto import tqdm

from ..fileio import atomic_path
from .shardfile import attr_value, build_mol, dense_to_tril, normalize_basis, normalize_xc

if TYPE_CHECKING:
    from .dataset import ShardDataset

__all__ = ["HINIT_FORMAT_VERSION", "default_cache_dir", "HInitCache", "compute_hinit_tril",
           "precompute_hinit"]

log = logging.getLogger(__name__)

HINIT_FORMAT_VERSION = 1
_GROUP = "hinit"  # the side file's HDF5 group: one dataset per molecule index


def default_cache_dir() -> Path:
    """``$QHFLOW_CACHE`` when set, else ``~/.cache/pyscf_qhflow/hinit``."""
    env = os.environ.get("QHFLOW_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pyscf_qhflow" / "hinit"


def compute_hinit_tril(Z: np.ndarray, pos: np.ndarray, basis: str, xc: str, grid_level: int,
                       charge: int = 0) -> np.ndarray:
    """H_init of one geometry (Angstrom) as its lower triangle, float64 Hartree."""
    from .. import hinit
    mol = build_mol(Z, pos, basis, charge)
    return dense_to_tril(hinit.minao_fock(mol, xc=xc, grid_level=grid_level))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
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
                # HDF5 dataset names of the shard format (FORMAT.md)
                for name in ("qm9_index", "natoms", "Z", "R"):
                    digest.update(np.ascontiguousarray(f[name][()]).tobytes())
            self._identity = {
                "format_version": HINIT_FORMAT_VERSION,
                "xc": normalize_xc(self.xc), "basis": normalize_basis(self.basis),
                "grid_level": self.grid_level,
                "source_name": self.shard.name,
                "source_size": self.shard.stat().st_size,
                "source_digest": digest.hexdigest(),
            }
        return self._identity

    def _mismatch(self, f: h5py.File) -> str | None:
        for k, want in self.identity().items():
            have = attr_value(f.attrs.get(k))
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
        if self._handle is None or str(i) not in self._handle[_GROUP]:
            return None
        return self._handle[_GROUP][str(i)][()]

    def cached(self) -> set[int]:
        """Indices (inside the shard) present in a valid side file."""
        f = self._open()
        if f is None:
            return set()
        with f:
            return {int(k) for k in f[_GROUP].keys()}

    def put(self, entries: dict[int, np.ndarray]) -> None:
        """Add ``{index: lower triangle}`` atomically (copy, add, replace, under a lock)."""
        if not entries:
            return
        # the lock serialises writers: each one copies the file the previous one replaced
        with _locked(self._lock_path), atomic_path(self.path) as tmp:
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
                    f.create_group(_GROUP)
                group = f[_GROUP]
                for i, values in entries.items():
                    if str(int(i)) not in group:
                        group.create_dataset(str(int(i)), data=np.asarray(values, np.float64))
        self._handle_checked = False  # reopen on the next get


# ------------------------------------------------------------------ precompute

def _precompute_task(args):
    k, j, Z, pos, basis, xc, grid_level, charge = args
    return k, j, compute_hinit_tril(Z, pos, basis, xc, grid_level, charge)


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
    done: dict[int, set[int]] = {}  # shard -> indices already in its side file
    todo = []
    for i in range(len(dataset)):  # records are ordered by shard
        k, j = dataset.position(i)
        if k not in done:
            done[k] = dataset.hinit_cache(k).cached()
        if j not in done[k]:
            Z, pos = dataset.geometry(i)
            todo.append((k, j, Z, pos, dataset.basis, dataset.xc, dataset.grid_level,
                         dataset.shard_charge(k)))
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
