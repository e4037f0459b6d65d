"""Labelled data: the shard format, reading, caching, splitting and writing shards.

* :mod:`.shardfile` -- the file format: finding shards, their protocol, packed matrices;
* :mod:`.dataset` -- :class:`~.dataset.ShardDataset`, shards as per-molecule records;
* :mod:`.hinit_cache` -- H_init side files for shards that do not store ``hinit``;
* :mod:`.splits` -- the train/val/test split by QM9 index;
* :mod:`.label` -- labelling molecules with PySCF and writing shards.

The shard layout is described in the data directory's ``FORMAT.md``.
Importing this package is light: the names below load their module on first use.
"""
from __future__ import annotations

import importlib

__all__ = ["ShardDataset", "find_shards", "read_protocol", "check_protocol",
           "split_by_qm9_index", "precompute_hinit", "label_molecule", "write_shard"]

_HOME = {"ShardDataset": "dataset", "find_shards": "shardfile", "read_protocol": "shardfile",
         "check_protocol": "shardfile", "split_by_qm9_index": "splits",
         "precompute_hinit": "hinit_cache", "label_molecule": "label", "write_shard": "label"}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module 'pyscf_qhflow.data' has no attribute {name!r}")
