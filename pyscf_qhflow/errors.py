"""What the package raises and warns, and the input check every entry point runs.

A leaf module (numpy only): anything may import it, it imports nothing of the
package, so no import cycle runs through the errors.
"""
from __future__ import annotations

import numpy as np

__all__ = ["UnsupportedMoleculeError", "QHFlowGuessWarning", "check_geometry", "check_input"]


class UnsupportedMoleculeError(ValueError):
    """The molecule (basis type, ECP, ghost atom, element...) cannot be served."""


class QHFlowGuessWarning(UserWarning):
    """The qhflow guess stepped aside or changed its prediction (the reason is in the message)."""


def check_geometry(positions: np.ndarray, min_distance: float = 0.1) -> None:
    """Raise ``ValueError`` for empty, non-finite or overlapping geometries (Angstrom)."""
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3 or pos.shape[0] == 0:
        raise ValueError(f"expected a non-empty (natm, 3) geometry, got shape {pos.shape}")
    if not np.all(np.isfinite(pos)):
        raise ValueError("geometry contains NaN or infinite coordinates")
    if len(pos) > 1:
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
        d[np.diag_indices(len(pos))] = np.inf
        i, j = np.unravel_index(np.argmin(d), d.shape)
        if d[i, j] < min_distance:
            raise ValueError(f"atoms {i} and {j} are {d[i, j]:.3g} Angstrom apart "
                             f"(closer than {min_distance} Angstrom)")


def check_input(mol) -> None:
    """``ValueError`` for inputs no guess can serve: no atoms, NaN/inf or overlapping atoms."""
    if mol.natm == 0:
        raise ValueError("empty molecule: mol has no atoms")
    check_geometry(mol.atom_coords(unit="Angstrom"))
