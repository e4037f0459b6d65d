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
    The XC grid level of the H_init that the ``'qhflow'`` guess and
    ``oneshot`` build (the network's input).  ``1`` (default): a level-1 grid
    of its own for H_init only, while the SCF builds its usual grid: the
    H_init build takes about half the seconds (XC dominates a Fock build),
    its H_init differs from the protocol's (level 3) by 1.2 µHa MAE, and the
    model's H MAE does not change (170.5 µHa either way on 10 test molecules,
    ``benchmarks/bench_cheap_hinit.py``, RESULTS section 18).  ``None``: the
    model's protocol grid (level 3), built once and shared with the SCF that
    follows.  Labels always use the protocol grid.

``guess_confidence``
    ``True`` (default): the ``'qhflow'`` guess also draws the calibration's K
    prior samples (one network batch, about 3-5 times one prediction) for its
    confidence and the low-confidence fallback (``mf.qhflow_info['confidence']``).
    ``False``: the prediction alone, no confidence and no fallback on it;
    the fastest guess (screening of molecules the model is known to serve).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

on_unsupported: str = "warn"
default_model: Any = None
hinit_grid_level: int | None = 1
guess_confidence: bool = True

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


@contextmanager
def temporarily(**options) -> Iterator[None]:
    """Set options of this module for the block and restore them after (the CLI's way)."""
    import sys
    module = sys.modules[__name__]
    unknown = sorted(k for k in options if k.startswith("_") or not hasattr(module, k))
    if unknown:
        raise ValueError(f"unknown pyscf_qhflow.config option(s): {unknown}")
    saved = {k: getattr(module, k) for k in options}
    for k, v in options.items():
        setattr(module, k, v)
    try:
        check()
        yield
    finally:
        for k, v in saved.items():
            setattr(module, k, v)
