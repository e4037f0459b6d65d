"""H_init, the MinAO-density Fock matrix, and the model-protocol KS object.

The network predicts the residual ``F* - H_init`` where ``H_init`` is the
Kohn-Sham Fock matrix (Hartree, PySCF AO order) built from PySCF's MinAO
guess density in the model's functional and grid.  Everything that needs a
KS object "in the model protocol" (labelling, H_init, the benchmark) builds
it with :func:`protocol_ks`, so the protocol lives in one place:

* restricted closed-shell ``dft.rks.RKS`` (never the ROKS that ``dft.RKS``
  returns for ``mol.spin != 0``),
* spherical basis (``mol.cart`` must be False), no density fitting,
* ``grids.level = grid_level`` (PySCF's default pruned Treutler grids).

Open-shell or charged molecules.  PySCF's MinAO guess is a superposition of
*neutral* spherically averaged atoms: its spin-summed density ignores
``mol.charge`` and ``mol.spin`` (its trace is the neutral electron count).
:func:`minao_fock` always builds the closed-shell RKS Fock of that spin-summed
density, for any charge and spin; ``rks.RKS`` on an odd-electron ``mol``
builds ``get_init_guess``/``get_fock`` without complaint (checked in
``tests/test_data.py``), so no spin-0 copy of ``mol`` is needed.  H_init is
therefore a function of the geometry, basis, functional and grid only.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pyscf import gto
from pyscf.lib import logger

if TYPE_CHECKING:
    from pyscf.dft import rks

__all__ = ["protocol_ks", "minao_fock", "overlap"]


def protocol_ks(mol: gto.Mole, xc: str = "b3lyp", grid_level: int = 3) -> "rks.RKS":
    """A restricted KS object in the QH9 protocol (see the module docstring).

    Raises ``ValueError`` for a Cartesian basis: labels and models are spherical.
    """
    if mol.cart:
        raise ValueError("the qhflow protocol uses spherical basis functions; "
                         "got mol.cart=True")
    from pyscf.dft import rks  # here, so overlap() needs no DFT libraries (libxc)
    mf = rks.RKS(mol, xc=xc)
    mf.grids.level = grid_level
    return mf


def minao_fock(mol: gto.Mole, xc: str = "b3lyp", grid_level: int = 3) -> np.ndarray:
    """Fock matrix of PySCF's MinAO guess density, Hartree, PySCF AO order.

    ``F = h + J[D] - a_x/2 K[D] + V_xc[D]`` with ``D = mf.get_init_guess(key='minao')``
    of a :func:`protocol_ks` object (spin-summed, neutral atoms; see the module
    docstring for charged and open-shell molecules).  One Fock build: seconds
    for a QM9 molecule in def2-SVP.  Returns (nao, nao) float64, symmetric.
    """
    mf = protocol_ks(mol, xc=xc, grid_level=grid_level)
    t0 = (logger.process_clock(), logger.perf_counter())
    dm = mf.get_init_guess(mol, key="minao")  # [nao, nao]
    fock = np.asarray(mf.get_fock(dm=dm))  # [nao, nao]
    logger.timer(mf, "qhflow H_init (minao Fock)", *t0)
    return 0.5 * (fock + fock.T)


def overlap(mol: gto.Mole) -> np.ndarray:
    """AO overlap matrix S, (nao, nao) float64, PySCF AO order."""
    return mol.intor_symmetric("int1e_ovlp")
