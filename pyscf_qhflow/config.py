"""Package-wide options (the only mutable global state; documented here).

``on_unsupported``
    What the ``'qhflow'`` guess does when the model cannot serve a molecule
    (element, basis, Cartesian basis, ECP, ghost atoms):
    ``'warn'`` (default) warns with the reason and uses PySCF's MinAO guess;
    ``'raise'`` raises :class:`~pyscf_qhflow.errors.UnsupportedMoleculeError`.

``default_model``
    The predictor used when an SCF object has no ``qhflow_model``; set it
    with :func:`pyscf_qhflow.set_default_model`.  ``None`` means the shipped
    weights (``load_model('default')``), loaded on first use and kept here.

``hinit_grid_level``
    The XC grid level of the H_init the ``'qhflow'`` guess builds (the
    network's input).  ``None`` (default): the model's protocol grid (level
    3), built once and shared with the SCF that follows.  ``1``: a level-1
    grid for H_init only (about half the seconds of the H_init build, and
    ~1 µHa MAE from the protocol's H_init against the model's ~100 µHa error,
    ``benchmarks/bench_cheap_hinit.py``), while the SCF builds its own level-3
    grid.  Labels always use the protocol grid.
"""
from __future__ import annotations

from typing import Any

on_unsupported: str = "warn"
default_model: Any = None
hinit_grid_level: int | None = None

_VALID = {"on_unsupported": ("warn", "raise")}


def reject_unknown_keys(cls, options: dict, where: str) -> None:
    """``ValueError`` naming every key of ``options`` that is not a field of dataclass ``cls``.

    Every option dataclass (model, flow, training) goes through this, so a
    misspelt key is an error rather than a silently ignored setting.
    """
    from dataclasses import fields
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; known keys: {sorted(known)}")


def check() -> None:
    """Raise ``ValueError`` when an option has an invalid value."""
    if on_unsupported not in _VALID["on_unsupported"]:
        raise ValueError(f"pyscf_qhflow.config.on_unsupported must be one of "
                         f"{_VALID['on_unsupported']}, got {on_unsupported!r}")
    if hinit_grid_level is not None and hinit_grid_level not in range(10):
        raise ValueError(f"pyscf_qhflow.config.hinit_grid_level must be None or a PySCF "
                         f"grid level 0-9, got {hinit_grid_level!r}")
