"""Labelled data: reading HDF5 shards (:mod:`.shards`) and writing them (:mod:`.label`).

The shard layout is described in the data directory's ``FORMAT.md`` and
written by :func:`pyscf_qhflow.data.label.write_shard`.  Importing this package
is light: torch and h5py load with :mod:`.shards`.
"""
from __future__ import annotations

__all__ = ["ShardDataset", "find_shards", "read_protocol", "check_protocol",
           "split_by_qm9_index", "precompute_hinit", "label_molecule", "write_shard"]


def __getattr__(name: str):
    if name in ("ShardDataset", "find_shards", "read_protocol", "check_protocol",
                "split_by_qm9_index", "precompute_hinit"):
        from . import shards
        return getattr(shards, name)
    if name in ("label_molecule", "write_shard"):
        from . import label
        return getattr(label, name)
    raise AttributeError(f"module 'pyscf_qhflow.data' has no attribute {name!r}")
