"""Package-wide options (the only mutable global state; documented here).

``on_unsupported``
    What the ``'qhflow'`` guess does when the model cannot serve a molecule
    (element, basis, Cartesian basis, ECP, ghost atoms):
    ``'warn'`` (default) warns with the reason and uses PySCF's MinAO guess;
    ``'raise'`` raises :class:`~pyscf_qhflow.aolayout.UnsupportedMoleculeError`.
"""
from __future__ import annotations

on_unsupported: str = "warn"

_VALID = {"on_unsupported": ("warn", "raise")}


def check() -> None:
    """Raise ``ValueError`` when an option has an invalid value."""
    if on_unsupported not in _VALID["on_unsupported"]:
        raise ValueError(f"pyscf_qhflow.config.on_unsupported must be one of "
                         f"{_VALID['on_unsupported']}, got {on_unsupported!r}")
