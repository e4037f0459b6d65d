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
"""
from __future__ import annotations

from typing import Any

on_unsupported: str = "warn"
default_model: Any = None

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
