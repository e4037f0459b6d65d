"""The shard file format: finding shard files, their protocol, packed matrices.

A shard (layout in the data directory's ``FORMAT.md``, written by
:func:`pyscf_qhflow.data.label.write_shard`) holds n molecules: geometries,
the lower triangle of the converged Fock matrix (float32, PySCF AO order),
energies and SCF bookkeeping.  This module owns what every reader and
writer of that layout shares: where shards are (:func:`find_shards`), which
protocol they were labelled with (:func:`read_protocol`,
:func:`check_protocol`), how matrices are packed (:func:`tril_to_dense`,
:func:`dense_to_tril`) and the PySCF molecule of a stored geometry
(:func:`build_mol`).  It needs h5py and numpy, not torch.
"""
from __future__ import annotations

import glob as globlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

__all__ = ["SHARD_PATTERN", "find_shards", "read_protocol", "check_protocol", "attr_value",
           "normalize_xc", "normalize_basis", "tril_to_dense", "dense_to_tril", "build_mol"]

SHARD_PATTERN = "qm9_b3lyp_def2svp_*.h5"


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
        attrs = {k: attr_value(v) for k, v in f.attrs.items()}
    attrs["file"] = str(path)
    return attrs


def attr_value(value):
    """An HDF5 attribute as a Python value (``bytes`` -> ``str``, numpy scalar -> scalar)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def normalize_xc(xc: str) -> str:
    """Functional name for comparison: case and spaces do not matter."""
    return str(xc).strip().lower().replace(" ", "")


def normalize_basis(basis: str) -> str:
    """Basis name for comparison: as PySCF does, case, '-', '_' and spaces do not matter."""
    return re.sub(r"[-_\s]", "", str(basis).lower())


def check_protocol(attrs: dict, xc: str, basis: str) -> None:
    """Raise ``ValueError`` naming the file when a shard's ``xc``/``basis`` differ.

    Comparison ignores case (and, for the basis, '-', '_' and spaces, as PySCF does).
    """
    where = attrs.get("file", "<shard>")
    for name, want, norm in (("xc", xc, normalize_xc), ("basis", basis, normalize_basis)):
        if name not in attrs:
            raise ValueError(f"{where}: no '{name}' attribute; not a qhflow shard "
                             "(see FORMAT.md)")
        if norm(attrs[name]) != norm(want):
            raise ValueError(f"{where} was labelled with {name}={attrs[name]!r} but "
                             f"{name}={want!r} was requested; use shards of the same "
                             "protocol or change the requested protocol")
    if attrs.get("cart", False):
        raise ValueError(f"{where} uses a Cartesian basis; qhflow works in spherical AOs")


def tril_to_dense(values: np.ndarray, nao: int) -> np.ndarray:
    """Lower triangle (``numpy.tril_indices(nao)`` order) -> symmetric (nao, nao) float64."""
    out = np.zeros((nao, nao))
    out[np.tril_indices(nao)] = values
    return out + np.tril(out, -1).T


def dense_to_tril(matrix: np.ndarray) -> np.ndarray:
    """(nao, nao) -> its lower triangle in ``numpy.tril_indices`` order."""
    return np.asarray(matrix)[np.tril_indices(len(matrix))]


def build_mol(Z: np.ndarray, pos: np.ndarray, basis: str, charge: int = 0):
    """The ``gto.Mole`` of a stored geometry (Angstrom); odd electron counts get spin 1."""
    from pyscf import gto
    spin = int(np.sum(Z) - charge) % 2
    return gto.M(atom=[(int(z), r) for z, r in zip(Z, pos)], basis=basis, unit="Angstrom",
                 charge=charge, spin=spin, verbose=0)
