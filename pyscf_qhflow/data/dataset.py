"""The labelled molecules of several shards as one indexable data set.

:class:`ShardDataset` serves the molecules of shard files (:mod:`.shardfile`)
as the per-molecule records of :mod:`pyscf_qhflow.keys`, optionally with the
overlap matrix (computed from the geometry) and H_init.  H_init comes from
the shard when it stores one (``hinit`` in ``FORMAT.md``) at the requested
grid level, else from the H_init cache (:mod:`.hinit_cache`), built there on
first use.  Splits of a data set are in :mod:`.splits`.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from .. import keys
from .hinit_cache import HInitCache, compute_hinit_tril, default_cache_dir
from .shardfile import build_mol, check_protocol, find_shards, read_protocol, tril_to_dense

__all__ = ["ShardDataset"]

log = logging.getLogger(__name__)

# arrays read into memory when a dataset is built (everything but Z, R, fock, hinit)
_INDEX_FIELDS = ("qm9_index", "natoms", "atom_offset", "nao", "fock_offset", "energy",
                 "converged")


@dataclass
class _Shard:
    path: Path
    attrs: dict
    index: dict  # _INDEX_FIELDS -> arrays


class ShardDataset(torch.utils.data.Dataset):
    """Molecules of several shards as :mod:`pyscf_qhflow.keys` records.

    Args:
        shards: a directory, glob, file or list of them (see
            :func:`~pyscf_qhflow.data.shardfile.find_shards`).
        xc, basis: the protocol every shard must carry (else ``ValueError``).
        with_overlap: add ``overlap`` (S, computed from the geometry; cheap).
        with_hinit: add ``hinit`` (H_init: the shard's stored one, else cached in
            ``cache_dir``; see :mod:`.hinit_cache`).
        exclude_unconverged: skip entries with ``converged == False`` (count logged).
        cache_dir: H_init cache directory (default
            :func:`~pyscf_qhflow.data.hinit_cache.default_cache_dir`).
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

    def position(self, i: int) -> tuple[int, int]:
        """(shard number ``k`` in :attr:`shards`, index inside that shard) of record ``i``."""
        return int(self._which[i]), int(self._local[i])

    def locate(self, i: int) -> tuple[Path, int]:
        """(shard path, index inside the shard) of record ``i``."""
        k, j = self.position(i)
        return self._shards[k].path, j

    def shard_charge(self, k: int) -> int:
        """Molecular charge of shard ``k`` (its ``charge`` attribute, default 0)."""
        return int(self._shards[k].attrs.get("charge", 0))

    def geometry(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(Z int64 (natm,), positions float64 (natm, 3) Angstrom) of record ``i``."""
        k, j = self.position(i)
        index, f = self._shards[k].index, self._file(k)
        a, n = int(index["atom_offset"][j]), int(index["natoms"][j])
        return f["Z"][a:a + n].astype(np.int64), f["R"][a:a + n].astype(np.float64)

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} molecules")
        i %= len(self)
        k, j = self.position(i)
        index, f = self._shards[k].index, self._file(k)
        Z, pos = self.geometry(i)  # [natm], [natm, 3]
        nao, o = int(index["nao"][j]), int(index["fock_offset"][j])
        fock = tril_to_dense(f["fock"][o:o + nao * (nao + 1) // 2], nao)  # [nao, nao]
        rec = {keys.Z: Z, keys.POS: pos, keys.FOCK: fock,
               keys.ENERGY: np.float64(index["energy"][j]),
               keys.QM9_INDEX: np.int64(index["qm9_index"][j])}
        if self.with_overlap:
            from .. import hinit
            rec[keys.OVERLAP] = hinit.overlap(build_mol(Z, pos, self.basis, self.shard_charge(k)))
        if self.with_hinit:
            rec[keys.HINIT] = tril_to_dense(self._hinit_tril(k, j, Z, pos), nao)
        return rec

    def _hinit_tril(self, k: int, j: int, Z: np.ndarray, pos: np.ndarray) -> np.ndarray:
        f = self._file(k)
        stored_level = int(self._shards[k].attrs.get("grid_level", -1))
        if "hinit" in f and stored_level == self.grid_level:
            # stored beside the label (FORMAT.md): no build, no cache
            index = self._shards[k].index
            nao, o = int(index["nao"][j]), int(index["fock_offset"][j])
            return f["hinit"][o:o + nao * (nao + 1) // 2]
        cache = self.hinit_cache(k)
        values = cache.get(j)
        if values is None:
            values = cache.get(j, refresh=True)  # another process may have added it
        if values is None:
            values = compute_hinit_tril(Z, pos, self.basis, self.xc, self.grid_level,
                                        self.shard_charge(k))
            cache.put({j: values})
        return values
